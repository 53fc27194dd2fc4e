//! Trellis ext-auth, the pure part: the auth config model, the request an evaluator sees
//! ([`CheckInput`]), its decision ([`Outcome`]) and the evaluators that need no I/O.
//!
//! ```text
//!  document (JSON)  --AuthConfigSet::compile-->  config_id -> CompiledAuthConfig
//!                                                 steps: basic | apiKey | jwt | opa | ldap* | oidc* | passThrough*
//!                                                 expr:  booleanExpr (or all, in order)
//!  server: CheckRequest -> CheckInput -> expr.evaluate(run step i) -> Outcome -> CheckResponse
//! ```
//! Steps marked `*` (and JWT with a remote key set) need I/O: the compiled step carries their
//! checked settings and the server runs them. The management server calls the same
//! [`AuthConfigSet::compile`] when a config is applied, so a config that would not load is
//! refused there, with the same message.

mod apikey;
mod apr1;
mod basic;
mod compile;
mod config;
mod error;
mod expr;
mod input;
mod jwks;
mod jwt;
mod md5;
mod opa;

pub use apikey::ApiKeyAuth;
pub use basic::{Algorithm as BasicAlgorithm, BasicAuth};
pub use compile::{AuthConfigSet, CompiledAuthConfig, Evaluator, PassThroughGrpc, Step};
pub use config::*;
pub use error::ExtAuthError;
pub use expr::{Expr, ExprError};
pub use input::{CheckInput, Outcome};
pub use jwks::Jwks;
pub use jwt::{
    Claims, JwksSource, JwtError, JwtExpectations, JwtValidator, LEEWAY_SECS, bearer_challenge, bearer_token,
    token_kid, verify_jwt,
};
pub use opa::{OpaPolicy, input_document};

/// The value of a request header; `name` is matched case-insensitively.
pub fn header<'a>(input: &'a CheckInput, name: &str) -> Option<&'a str> {
    if let Some(value) = input.headers.get(name) {
        return Some(value.as_str());
    }
    input
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The value of a cookie from the `cookie` header (first match wins).
pub fn cookie<'a>(input: &'a CheckInput, name: &str) -> Option<&'a str> {
    let raw = header(input, "cookie")?;
    raw.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_headers_and_cookies() {
        let mut input = CheckInput::default();
        input.headers.insert("x-token".into(), "t".into());
        input.headers.insert("cookie".into(), "a=1; session=abc ;b=2".into());
        assert_eq!(header(&input, "X-Token"), Some("t"));
        assert_eq!(header(&input, "missing"), None);
        assert_eq!(cookie(&input, "session"), Some("abc"));
        assert_eq!(cookie(&input, "b"), Some("2"));
        assert_eq!(cookie(&input, "sess"), None);
    }
}
