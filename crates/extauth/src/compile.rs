//! From the document to ready evaluators: every reference checked, Rego parsed, inline keys
//! parsed, the boolean expression resolved to indexes. Pure and deterministic, so the management
//! server can run it at apply time and refuse what the service would refuse.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use trellis_base::parse_duration;

use crate::apikey::ApiKeyAuth;
use crate::basic::{Algorithm, BasicAuth};
use crate::config::*;
use crate::error::ExtAuthError;
use crate::expr::Expr;
use crate::jwks::Jwks;
use crate::jwt::{JwksSource, JwtExpectations, JwtValidator};
use crate::opa::OpaPolicy;
use crate::{CheckInput, Outcome};

const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const SUPPORTED: &str = "basicAuth, apiKeyAuth, oauth2, opaAuth, ldap, passThroughAuth";

/// Every auth config of a document, by `config_id`.
#[derive(Debug, Default)]
pub struct AuthConfigSet {
    configs: BTreeMap<String, CompiledAuthConfig>,
}

/// One auth config ready to evaluate.
#[derive(Debug)]
pub struct CompiledAuthConfig {
    pub id: String,
    pub steps: Vec<Step>,
    pub expr: Expr,
    pub fail_on_redirect: bool,
}

/// One named entry of the config's list.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub evaluator: Evaluator,
}

/// What one step does. Variants holding raw JSON are run by the server's own modules.
#[derive(Debug)]
pub enum Evaluator {
    Basic(BasicAuth),
    ApiKey(ApiKeyAuth),
    Jwt(JwtValidator),
    /// Boxed: a prepared regorus engine is large.
    Opa(Box<OpaPolicy>),
    /// The `ldap` object.
    Ldap(Value),
    /// The `oauth2.oidcAuthorizationCode` object.
    Oidc(Value),
    PassThrough(PassThroughGrpc),
}

/// A checked `passThroughAuth.grpc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PassThroughGrpc {
    /// `host:port`.
    pub address: String,
    pub connection_timeout: Duration,
    pub failure_mode_allow: bool,
}

// The server shares compiled configs between concurrent checks.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<AuthConfigSet>();
};

impl AuthConfigSet {
    /// Compiles a whole document (`{"configs": [{"id", "spec"}]}`, see [`AuthConfigDocument`]);
    /// the first invalid config fails it all. For the management server and `--config` files.
    pub fn compile(document: &Value) -> Result<AuthConfigSet, ExtAuthError> {
        let (set, mut errors) = Self::compile_lenient(document)?;
        match errors.is_empty() {
            true => Ok(set),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Compiles every config that is valid and returns the errors of the others, so one bad
    /// config denies its own routes instead of holding back every other config's updates.
    /// Fails only when the document itself has the wrong shape.
    pub fn compile_lenient(document: &Value) -> Result<(AuthConfigSet, Vec<ExtAuthError>), ExtAuthError> {
        let document: AuthConfigDocument = from_value(document).map_err(|(at, message)| ExtAuthError::Document {
            at: if at.is_empty() { "(top level)".into() } else { at },
            message,
        })?;
        let mut configs = BTreeMap::new();
        let mut errors = Vec::new();
        for (index, entry) in document.configs.iter().enumerate() {
            let at = format!("configs[{index}].id");
            if entry.id.trim().is_empty() {
                errors.push(ExtAuthError::Document {
                    at,
                    message: "must not be empty (it is the config_id routes select the config by)".into(),
                });
            } else if configs.contains_key(&entry.id) {
                errors.push(ExtAuthError::Document {
                    at,
                    message: format!("{:?} appears twice", entry.id),
                });
            } else {
                match CompiledAuthConfig::compile(&entry.id, &entry.spec) {
                    Ok(compiled) => {
                        configs.insert(entry.id.clone(), compiled);
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        Ok((AuthConfigSet { configs }, errors))
    }

    pub fn get(&self, id: &str) -> Option<&CompiledAuthConfig> {
        self.configs.get(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.configs.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    pub fn into_configs(self) -> impl Iterator<Item = CompiledAuthConfig> {
        self.configs.into_values()
    }
}

impl CompiledAuthConfig {
    /// The upstream headers the steps of this config can set (lowercase). When a request is
    /// allowed, the ones the deciding steps did not set are removed from it: otherwise a client
    /// could send `x-user-id: admin` itself and have it reach the upstream as if auth had set
    /// it (say through the other side of `basic1 || key1`, or a claim the token lacks).
    pub fn identity_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for step in &self.steps {
            match &step.evaluator {
                Evaluator::Basic(_) | Evaluator::Ldap(_) => names.push("x-user-id".into()),
                Evaluator::ApiKey(auth) => names.extend(auth.header_names()),
                Evaluator::Jwt(validator) => names.extend(validator.claims_to_headers.iter().map(|(_, h)| h.clone())),
                Evaluator::Oidc(config) => {
                    for field in ["/headers/idTokenHeader", "/headers/accessTokenHeader"] {
                        if let Some(name) = config.pointer(field).and_then(Value::as_str) {
                            names.push(name.to_string());
                        }
                    }
                }
                // OPA sets no headers; a passthrough server's are its own (not known here).
                Evaluator::Opa(_) | Evaluator::PassThrough(_) => {}
            }
        }
        let mut names: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Compiles one Gloo `AuthConfigSpec` (the management server's check for one AuthConfig).
    pub fn compile(id: &str, spec: &Value) -> Result<CompiledAuthConfig, ExtAuthError> {
        let spec: AuthConfigSpec = from_value(spec).map_err(|(at, message)| ExtAuthError::config(id, at, message))?;
        if spec.configs.is_empty() {
            return Err(ExtAuthError::config(id, "configs", "at least one config is required"));
        }
        let mut steps: Vec<Step> = Vec::with_capacity(spec.configs.len());
        for (index, raw) in spec.configs.iter().enumerate() {
            let name = raw
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("config_{index}"));
            let at = |field: &str| {
                let entry = match raw.get("name").and_then(Value::as_str) {
                    Some(name) => format!("configs[{index}] ({name})"),
                    None => format!("configs[{index}]"),
                };
                if field.is_empty() {
                    entry
                } else {
                    format!("{entry}: {field}")
                }
            };
            if steps.iter().any(|s| s.name == name) {
                return Err(ExtAuthError::config(
                    id,
                    at("name"),
                    format!("{name:?} is used by another config"),
                ));
            }
            let entry: ConfigEntry =
                from_value(raw).map_err(|(field, message)| ExtAuthError::config(id, at(&field), message))?;
            let evaluator =
                compile_entry(entry).map_err(|(field, message)| ExtAuthError::config(id, at(&field), message))?;
            steps.push(Step { name, evaluator });
        }
        let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
        let expr = match spec.boolean_expr.as_deref().filter(|e| !e.trim().is_empty()) {
            Some(text) => {
                Expr::parse(text, &names).map_err(|e| ExtAuthError::config(id, "booleanExpr", e.to_string()))?
            }
            None => Expr::all(steps.len()).expect("configs is not empty"),
        };
        Ok(CompiledAuthConfig {
            id: id.to_string(),
            steps,
            expr,
            fail_on_redirect: spec.fail_on_redirect,
        })
    }

    /// The final answer: with `failOnRedirect`, an OIDC redirect becomes a plain 401.
    pub fn finish(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Deny {
                status: 301..=303 | 307 | 308,
                ..
            } if self.fail_on_redirect => Outcome::deny(401),
            other => other,
        }
    }
}

impl Evaluator {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Evaluator::Basic(_) => "basic",
            Evaluator::ApiKey(_) => "api_key",
            Evaluator::Jwt(_) => "jwt",
            Evaluator::Opa(_) => "opa",
            Evaluator::Ldap(_) => "ldap",
            Evaluator::Oidc(_) => "oidc",
            Evaluator::PassThrough(_) => "pass_through",
        }
    }

    /// The decision when it needs no I/O (JWT only with inline keys); None for the server to run.
    pub fn check_pure(&self, input: &CheckInput, now: u64) -> Option<Outcome> {
        match self {
            Evaluator::Basic(basic) => Some(basic.check(input)),
            Evaluator::ApiKey(keys) => Some(keys.check(input)),
            Evaluator::Opa(policy) => Some(policy.check(input)),
            Evaluator::Jwt(jwt) => match &jwt.source {
                JwksSource::Local(jwks) => Some(jwt.check(input, jwks, now)),
                JwksSource::Remote { .. } => None,
            },
            Evaluator::Ldap(_) | Evaluator::Oidc(_) | Evaluator::PassThrough(_) => None,
        }
    }
}

/// Field path (relative to the entry) and message.
type EntryError = (String, String);

fn compile_entry(entry: ConfigEntry) -> Result<Evaluator, EntryError> {
    let unsupported = [
        ("oauth", entry.oauth.is_some()),
        ("pluginAuth", entry.plugin_auth.is_some()),
        ("jwt", entry.jwt.is_some()),
        ("hmacAuth", entry.hmac_auth.is_some()),
        ("opaServerAuth", entry.opa_server_auth.is_some()),
        ("ldapInternal", entry.ldap_internal.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err((
            (*field).into(),
            format!("not supported by trellis ext-auth (use one of {SUPPORTED})"),
        ));
    }
    let set = [
        ("basicAuth", entry.basic_auth.is_some()),
        ("apiKeyAuth", entry.api_key_auth.is_some()),
        ("oauth2", entry.oauth2.is_some()),
        ("opaAuth", entry.opa_auth.is_some()),
        ("ldap", entry.ldap.is_some()),
        ("passThroughAuth", entry.pass_through_auth.is_some()),
    ];
    let chosen: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if chosen.len() != 1 {
        let message = if chosen.is_empty() {
            format!("no auth type: set one of {SUPPORTED}")
        } else {
            format!("one auth type per config, found {}", chosen.join(" and "))
        };
        return Err((String::new(), message));
    }
    if let Some(basic) = entry.basic_auth {
        return compile_basic(basic).map(Evaluator::Basic).map_err(under("basicAuth"));
    }
    if let Some(keys) = entry.api_key_auth {
        return compile_api_key(keys)
            .map(Evaluator::ApiKey)
            .map_err(under("apiKeyAuth"));
    }
    if let Some(oauth2) = entry.oauth2 {
        return compile_oauth2(oauth2).map_err(under("oauth2"));
    }
    if let Some(opa) = entry.opa_auth {
        return OpaPolicy::new(&opa.query, &opa.rego_modules)
            .map(|policy| Evaluator::Opa(Box::new(policy)))
            .map_err(|e| (join("opaAuth", &e.field), e.message));
    }
    if let Some(ldap) = entry.ldap {
        return match ldap {
            Value::Object(_) => Ok(Evaluator::Ldap(ldap)),
            _ => Err(("ldap".into(), "expected an object".into())),
        };
    }
    let pass = entry.pass_through_auth.expect("exactly one type is set");
    compile_pass_through(pass)
        .map(Evaluator::PassThrough)
        .map_err(under("passThroughAuth"))
}

fn compile_basic(basic: BasicAuthConfig) -> Result<BasicAuth, EntryError> {
    let (algorithm, users, field) = match (basic.apr, basic.encryption, basic.user_list) {
        (Some(apr), None, None) => (Algorithm::Apr1, apr.users, "apr"),
        (None, Some(encryption), Some(list)) => {
            let algorithm = match (encryption.apr, encryption.sha1) {
                (Some(_), None) => Algorithm::Apr1,
                (None, Some(_)) => Algorithm::Sha1,
                _ => return Err(("encryption".into(), "set exactly one of apr: {} or sha1: {}".into())),
            };
            (algorithm, list.users, "userList")
        }
        _ => {
            return Err((
                String::new(),
                "set either apr: {users} or both encryption and userList: {users}".into(),
            ));
        }
    };
    let users = users.into_iter().map(|(user, p)| (user, p.salt, p.hashed_password));
    BasicAuth::new(&basic.realm, algorithm, users).map_err(|message| (field.into(), message))
}

fn compile_api_key(config: ApiKeyAuthConfig) -> Result<ApiKeyAuth, EntryError> {
    let headers = config
        .headers_from_metadata_entry
        .iter()
        .chain(&config.headers_from_metadata)
        .map(|(header, entry)| (header.to_ascii_lowercase(), entry.name.clone(), entry.required))
        .collect();
    let keys = config.keys.into_iter().map(|k| (k.sha256, k.metadata));
    ApiKeyAuth::new(config.header_name.as_deref(), keys, headers).map_err(|message| {
        let (field, message) = message.split_once(": ").unwrap_or(("", &message));
        (field.to_string(), message.to_string())
    })
}

fn compile_oauth2(oauth2: OAuth2Config) -> Result<Evaluator, EntryError> {
    if oauth2.oauth2.is_some() {
        return Err((
            "oauth2".into(),
            "plain OAuth2 is not supported (use oidcAuthorizationCode or accessTokenValidation)".into(),
        ));
    }
    match (oauth2.access_token_validation, oauth2.oidc_authorization_code) {
        (Some(validation), None) => compile_access_token(validation)
            .map(Evaluator::Jwt)
            .map_err(|(at, message)| (join("accessTokenValidation", &at), message)),
        (None, Some(oidc @ Value::Object(_))) => Ok(Evaluator::Oidc(oidc)),
        (None, Some(_)) => Err(("oidcAuthorizationCode".into(), "expected an object".into())),
        _ => Err((
            String::new(),
            "set exactly one of accessTokenValidation or oidcAuthorizationCode".into(),
        )),
    }
}

fn compile_access_token(validation: AccessTokenValidation) -> Result<JwtValidator, EntryError> {
    for (field, set) in [
        ("introspectionUrl", validation.introspection_url.is_some()),
        ("introspection", validation.introspection.is_some()),
        ("userinfoUrl", validation.userinfo_url.is_some()),
    ] {
        if set {
            return Err((
                field.into(),
                "token introspection is not supported (validate JWTs with jwt)".into(),
            ));
        }
    }
    let jwt = validation.jwt.ok_or_else(|| {
        (
            "jwt".to_string(),
            "required: set jwt with remoteJwks or localJwks".to_string(),
        )
    })?;
    let source = match (jwt.remote_jwks, jwt.local_jwks) {
        (Some(remote), None) => {
            if !remote.url.starts_with("http://") && !remote.url.starts_with("https://") {
                return Err((
                    "jwt.remoteJwks.url".into(),
                    format!("{:?}: only http:// and https:// URLs are supported", remote.url),
                ));
            }
            let refresh_interval = match remote.refresh_interval.as_deref() {
                Some(text) => {
                    parse_duration(text).map_err(|e| ("jwt.remoteJwks.refreshInterval".to_string(), e.to_string()))?
                }
                None => DEFAULT_JWKS_REFRESH,
            };
            JwksSource::Remote {
                url: remote.url,
                refresh_interval,
            }
        }
        (None, Some(local)) => JwksSource::Local(
            Jwks::parse(&local.inline_string).map_err(|e| ("jwt.localJwks.inlineString".to_string(), e.to_string()))?,
        ),
        _ => return Err(("jwt".into(), "set exactly one of remoteJwks or localJwks".into())),
    };
    for (index, mapping) in validation.claims_to_headers.iter().enumerate() {
        if mapping.claim.is_empty() || mapping.header.is_empty() {
            return Err((
                format!("claimsToHeaders[{index}]"),
                "claim and header must not be empty".into(),
            ));
        }
    }
    Ok(JwtValidator {
        source,
        expectations: JwtExpectations {
            issuer: jwt.issuer.filter(|i| !i.is_empty()),
            audiences: jwt.audiences,
        },
        claims_to_headers: validation
            .claims_to_headers
            .into_iter()
            .map(|m| (m.claim, m.header.to_ascii_lowercase()))
            .collect(),
        required_scopes: validation
            .required_scopes
            .map(|s| s.scopes().to_vec())
            .unwrap_or_default(),
    })
}

fn compile_pass_through(pass: PassThroughAuthConfig) -> Result<PassThroughGrpc, EntryError> {
    if pass.http.is_some() {
        return Err(("http".into(), "HTTP passthrough is not supported (use grpc)".into()));
    }
    let grpc = pass
        .grpc
        .ok_or_else(|| ("grpc".to_string(), "required: set grpc.address".to_string()))?;
    let address = grpc.address.trim();
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        return Err(("grpc.address".into(), format!("{address:?} is not host:port")));
    }
    let connection_timeout = match grpc.connection_timeout.as_deref() {
        Some(text) => parse_duration(text).map_err(|e| ("grpc.connectionTimeout".to_string(), e.to_string()))?,
        None => DEFAULT_CONNECTION_TIMEOUT,
    };
    Ok(PassThroughGrpc {
        address: address.to_string(),
        connection_timeout,
        failure_mode_allow: pass.failure_mode_allow,
    })
}

/// Puts an entry error under `field` (e.g. `apr` -> `basicAuth.apr`).
fn under(field: &'static str) -> impl Fn(EntryError) -> EntryError {
    move |(at, message)| (join(field, &at), message)
}

fn join(prefix: &str, rest: &str) -> String {
    match rest {
        "" => prefix.to_string(),
        rest if rest.starts_with('[') => format!("{prefix}{rest}"),
        rest => format!("{prefix}.{rest}"),
    }
}

/// Deserializes with the path of the failing field, e.g. `opaAuth.regoModules`.
fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests;
