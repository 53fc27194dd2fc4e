//! OPA policies in Rego, evaluated in-process with regorus.
//!
//! The input document carries both shapes policies are written against:
//! - OPA's Envoy plugin: `input.attributes.request.http.{method,path,host,scheme,headers}`,
//!   `input.attributes.source.{address.socketAddress.address,principal}`,
//!   `input.attributes.contextExtensions`, `input.parsed_path`, `input.parsed_query`;
//! - Gloo's ext-auth: `input.check_request.attributes...` (the same attributes) and
//!   `input.http_request` (the same `http` object).
//!
//! Modules are parsed as Rego v1 first and as v0 (Gloo-era syntax: `allow { ... }`) when that
//! fails, so policies of both eras load; a module with `import rego.v1` is v1 either way.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::{CheckInput, Outcome};

/// Evaluation time after which a policy is stopped and the request denied.
const EVALUATION_LIMIT: Duration = Duration::from_millis(250);
/// Prepared engines kept for reuse; more concurrent checks clone the template.
const POOL_SIZE: usize = 16;

/// A compiled `opaAuth` config.
pub struct OpaPolicy {
    query: String,
    /// Modules parsed and the interpreter prepared; cloned when the pool is empty.
    template: regorus::Engine,
    /// Engines are not `Sync`, and cloning costs more than an uncontended lock.
    pool: Mutex<Vec<regorus::Engine>>,
}

impl std::fmt::Debug for OpaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaPolicy")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// OPA builtins Gloo's ext-auth policies use that the Rego engine lacks.
fn add_builtins(engine: &mut regorus::Engine) {
    // Names are fixed and unique: adding them to a fresh engine cannot fail.
    let _ = engine.add_extension("io.jwt.decode".to_string(), 1, Box::new(jwt_decode));
}

/// OPA's `io.jwt.decode(token)`: `[header, payload, signature]`, the signature hex encoded, the
/// token not verified (as in OPA; a policy that trusts claims must verify or check them).
fn jwt_decode(params: Vec<regorus::Value>) -> anyhow::Result<regorus::Value> {
    use base64::Engine as _;
    let token = params
        .first()
        .ok_or_else(|| anyhow::anyhow!("io.jwt.decode takes a token"))?
        .as_string()?;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        anyhow::bail!("io.jwt.decode: a JWT has three dot-separated parts");
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| anyhow::anyhow!("io.jwt.decode: not base64url: {e}"))
    };
    let json = |part: &str| -> anyhow::Result<regorus::Value> {
        let bytes = decode(part)?;
        regorus::Value::from_json_str(std::str::from_utf8(&bytes)?)
    };
    let signature: String = decode(signature)?.iter().map(|b| format!("{b:02x}")).collect();
    Ok(regorus::Value::from(vec![
        json(header)?,
        json(payload)?,
        regorus::Value::from(signature),
    ]))
}

/// Where a compile error is, relative to the `opaAuth` object, and what it is.
#[derive(Debug)]
pub(crate) struct OpaCompileError {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl OpaPolicy {
    /// Parses `modules` (source name -> Rego), then evaluates `query` once against an empty
    /// request so errors in either show at compile time rather than on the first request.
    pub(crate) fn new(query: &str, modules: &BTreeMap<String, String>) -> Result<OpaPolicy, OpaCompileError> {
        let mut engine = regorus::Engine::new();
        add_builtins(&mut engine);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVALUATION_LIMIT,
            check_interval: NonZeroU32::new(64).expect("non-zero"),
        });
        for (name, source) in modules {
            engine.set_rego_v0(false);
            if let Err(v1_error) = engine.add_policy(name.clone(), source.clone()) {
                engine.set_rego_v0(true);
                engine.add_policy(name.clone(), source.clone()).map_err(|v0_error| {
                    // A v1 complaint about a missing keyword means the module is written in v0,
                    // so the v0 parser's error is the one that points at the real mistake.
                    let v1 = v1_error.to_string();
                    let message = if v1.contains("keyword is required") {
                        v0_error.to_string()
                    } else {
                        v1
                    };
                    OpaCompileError {
                        field: format!("regoModules[{name:?}]"),
                        message: message.trim().to_string(),
                    }
                })?;
            }
        }
        if query.trim().is_empty() {
            return Err(OpaCompileError {
                field: "query".into(),
                message: "must not be empty (e.g. \"data.policy.allow == true\")".into(),
            });
        }
        let policy = OpaPolicy {
            query: query.to_string(),
            template: engine,
            pool: Mutex::new(Vec::new()),
        };
        let mut warm = policy.template.clone();
        policy
            .evaluate(&mut warm, &CheckInput::default())
            .map_err(|message| OpaCompileError {
                field: "query".into(),
                message,
            })?;
        Ok(OpaPolicy {
            template: warm,
            ..policy
        })
    }

    pub fn check(&self, input: &CheckInput) -> Outcome {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let mut engine = pooled.unwrap_or_else(|| self.template.clone());
        let allowed = self.evaluate(&mut engine, input);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_SIZE
        {
            pool.push(engine);
        }
        match allowed {
            Ok(true) => Outcome::allow(),
            _ => Outcome::deny(403),
        }
    }

    /// True only when the query yields exactly one result whose value is `true` (OPA's
    /// `ResultSet.Allowed`); undefined, false or anything else is a deny.
    fn evaluate(&self, engine: &mut regorus::Engine, input: &CheckInput) -> Result<bool, String> {
        engine.set_input(regorus::Value::from(input_document(input)));
        let results = engine
            .eval_query(self.query.clone(), false)
            .map_err(|e| e.to_string())?;
        let allowed = match results.result.as_slice() {
            [only] => matches!(only.expressions.as_slice(), [e] if e.value == regorus::Value::from(true)),
            _ => false,
        };
        Ok(allowed)
    }
}

/// The `input` document of one request (see the module comment for its shape).
pub fn input_document(input: &CheckInput) -> Value {
    let (path, query) = input.path.split_once('?').unwrap_or((&input.path, ""));
    let http = json!({
        "method": input.method,
        "path": input.path,
        "host": input.host,
        "scheme": input.scheme,
        "headers": input.headers,
        "body": input.body,
    });
    let attributes = json!({
        "request": { "http": http },
        "source": {
            "address": { "socketAddress": { "address": input.source_address } },
            "principal": input.source_principal,
        },
        "contextExtensions": input.context_extensions,
    });
    json!({
        "attributes": attributes,
        "parsed_path": path.trim_start_matches('/').split('/').map(percent_decode).collect::<Vec<_>>(),
        "parsed_query": parse_query(query),
        "check_request": { "attributes": attributes },
        "http_request": http,
    })
}

/// `a=1&a=2&b` -> `{"a": ["1", "2"], "b": [""]}`, decoded as a form (`+` is a space).
fn parse_query(query: &str) -> Map<String, Value> {
    let mut out: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(&key.replace('+', " "));
        let value = Value::String(percent_decode(&value.replace('+', " ")));
        if let Value::Array(values) = out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            values.push(value);
        }
    }
    out
}

/// `%41` -> `A`; malformed escapes are kept as they are; invalid UTF-8 is replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
