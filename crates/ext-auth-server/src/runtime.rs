//! The compiled configs with their I/O attached (remote key sets, LDAP, OIDC, passthrough
//! clients), and the evaluation of one request against the config its route selected.
//!
//! A new document builds a new [`Runtime`]; connections, fetched key sets and OIDC/LDAP state
//! are reused from the [`Shared`] caches when their settings did not change.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use trellis_extauth::{
    AuthConfigSet, CheckInput, CompiledAuthConfig, Evaluator, JwksSource, JwtValidator, Outcome, PassThroughGrpc,
    bearer_token, token_kid,
};
use trellis_support::httpc::HttpClient;

use super::jwks::RemoteJwks;
use super::passthrough::PassThrough;
use super::{ldap, oidc};

/// The context extension Envoy sets per route to pick the auth config.
pub const CONFIG_ID: &str = "config_id";

/// Every auth config by `config_id`, ready to check requests.
#[derive(Default)]
pub struct Runtime {
    configs: HashMap<String, RuntimeConfig>,
}

struct RuntimeConfig {
    /// Its `steps` moved into `runners`; the expression and `finish` are used from here.
    compiled: CompiledAuthConfig,
    runners: Vec<Runner>,
    /// Headers auth may set, removed on allow where it did not set them.
    identity_headers: Vec<String>,
}

struct Runner {
    name: String,
    kind: &'static str,
    run: Run,
}

enum Run {
    /// Basic, API key, OPA, and JWT with inline keys: `check_pure` answers these.
    Pure(Evaluator),
    RemoteJwt {
        validator: JwtValidator,
        keys: Arc<RemoteJwks>,
    },
    Ldap(Arc<ldap::Ldap>),
    Oidc(Arc<oidc::Oidc>),
    PassThrough(Arc<PassThrough>),
}

/// State kept across documents, keyed by the settings it was built from.
#[derive(Default)]
pub struct Shared {
    redis: Option<String>,
    /// Fetches remote key sets and reaches OIDC providers (trusting `--ca-file` for https).
    http: HttpClient,
    jwks: Cache<(String, Duration), RemoteJwks>,
    pass_through: Cache<PassThroughGrpc, PassThrough>,
    ldap: Cache<String, ldap::Ldap>,
    oidc: Cache<String, oidc::Oidc>,
}

impl Shared {
    pub fn new(redis: Option<String>, http: HttpClient) -> Shared {
        Shared {
            redis,
            http,
            ..Default::default()
        }
    }
}

impl Runtime {
    /// Attaches I/O to every step of `set`. A config whose LDAP, OIDC or passthrough settings
    /// cannot be built is left out (its routes are denied) and its error returned.
    pub fn build(set: AuthConfigSet, shared: &Shared) -> (Runtime, Vec<anyhow::Error>) {
        let mut used = Used::default();
        let mut configs = HashMap::new();
        let mut errors = Vec::new();
        for mut compiled in set.into_configs() {
            let identity_headers = compiled.identity_headers();
            let steps = std::mem::take(&mut compiled.steps);
            let runners: anyhow::Result<Vec<Runner>> = steps
                .into_iter()
                .map(|step| {
                    let kind = step.evaluator.kind();
                    let run = attach(step.evaluator, shared, &mut used)
                        .map_err(|e| e.context(format!("{}: {} ({kind})", compiled.id, step.name)))?;
                    Ok(Runner {
                        name: step.name,
                        kind,
                        run,
                    })
                })
                .collect();
            match runners {
                Ok(runners) => {
                    configs.insert(
                        compiled.id.clone(),
                        RuntimeConfig {
                            compiled,
                            runners,
                            identity_headers,
                        },
                    );
                }
                Err(error) => errors.push(error),
            }
        }
        // Drop what no config uses any more (closing connections, forgetting key sets).
        shared.jwks.retain(&used.jwks);
        shared.pass_through.retain(&used.pass_through);
        shared.ldap.retain(&used.ldap);
        shared.oidc.retain(&used.oidc);
        (Runtime { configs }, errors)
    }

    /// The headers to remove from an allowed request of `config_id`: those its auth can set but
    /// did not set this time.
    pub fn headers_to_remove(&self, config_id: &str, outcome: &Outcome) -> Vec<String> {
        let (Some(config), Outcome::Allow { upstream_headers }) = (self.configs.get(config_id), outcome) else {
            return Vec::new();
        };
        config
            .identity_headers
            .iter()
            .filter(|name| !upstream_headers.iter().any(|(set, _)| set.eq_ignore_ascii_case(name)))
            .cloned()
            .collect()
    }

    /// How many configs can be checked against.
    pub fn config_count(&self) -> usize {
        self.configs.len()
    }

    /// The decision for one request. A request without a known `config_id` is refused: the
    /// route asked for auth the service cannot provide, so letting it through would open it.
    pub async fn check(&self, input: &CheckInput, request: &CheckRequest) -> Outcome {
        let Some(id) = input.context_extensions.get(CONFIG_ID) else {
            tracing::warn!(
                "check without a config_id context extension; denying (is the route's ext_authz config set?)"
            );
            return Outcome::deny(403);
        };
        let Some(config) = self.configs.get(id) else {
            tracing::warn!(config_id = %id, "no auth config with this id; denying (not delivered yet, or a typo in the route)");
            return Outcome::deny(403);
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let outcome = config
            .compiled
            .expr
            .evaluate(config.runners.len(), |index| config.run(index, input, request, now))
            .await;
        config.compiled.finish(outcome)
    }
}

/// The I/O one step needs, from the shared caches when its settings are unchanged.
fn attach(evaluator: Evaluator, shared: &Shared, used: &mut Used) -> anyhow::Result<Run> {
    Ok(match evaluator {
        Evaluator::Jwt(validator) => match &validator.source {
            JwksSource::Remote { url, refresh_interval } => {
                let key = (url.clone(), *refresh_interval);
                used.jwks.push(key.clone());
                let keys = shared
                    .jwks
                    .get_or_try(key, || Ok(RemoteJwks::new(url, *refresh_interval, shared.http.clone())))?;
                Run::RemoteJwt { validator, keys }
            }
            JwksSource::Local(_) => Run::Pure(Evaluator::Jwt(validator)),
        },
        Evaluator::Ldap(config) => {
            let key = config.to_string();
            used.ldap.push(key.clone());
            Run::Ldap(shared.ldap.get_or_try(key, || ldap::Ldap::from_config(&config))?)
        }
        Evaluator::Oidc(config) => {
            let key = config.to_string();
            used.oidc.push(key.clone());
            let redis = shared.redis.as_deref();
            Run::Oidc(shared.oidc.get_or_try(key, || {
                Ok(oidc::Oidc::from_config(&config, redis)?.with_http_client(shared.http.clone()))
            })?)
        }
        Evaluator::PassThrough(settings) => {
            used.pass_through.push(settings.clone());
            Run::PassThrough(
                shared
                    .pass_through
                    .get_or_try(settings.clone(), || PassThrough::new(&settings))?,
            )
        }
        pure @ (Evaluator::Basic(_) | Evaluator::ApiKey(_) | Evaluator::Opa(_)) => Run::Pure(pure),
    })
}

impl RuntimeConfig {
    async fn run(&self, index: usize, input: &CheckInput, request: &CheckRequest, now: u64) -> Outcome {
        let Some(runner) = self.runners.get(index) else {
            return Outcome::deny(403);
        };
        let outcome = match &runner.run {
            // `build` only puts evaluators here that `check_pure` answers.
            Run::Pure(evaluator) => evaluator.check_pure(input, now).unwrap_or_else(|| Outcome::deny(403)),
            Run::RemoteJwt { validator, keys } => match bearer_token(input) {
                None => validator.check(input, &Default::default(), now),
                Some(token) => match keys.keys(token_kid(token).as_deref()).await {
                    Some(jwks) => validator.check(input, &jwks, now),
                    // No key set could ever be fetched: undecided (503), not a verdict on the
                    // token, so a booleanExpr's `!` cannot turn it into an allow.
                    None => Outcome::deny(503),
                },
            },
            Run::Ldap(ldap) => ldap.check(input).await,
            Run::Oidc(oidc) => oidc.check(input).await,
            Run::PassThrough(pass) => pass.check(request).await,
        };
        tracing::debug!(step = %runner.name, kind = runner.kind, allowed = outcome.is_allow(), "auth step");
        outcome
    }
}

/// Keys of the shared state the latest document uses.
#[derive(Default)]
struct Used {
    jwks: Vec<(String, Duration)>,
    pass_through: Vec<PassThroughGrpc>,
    ldap: Vec<String>,
    oidc: Vec<String>,
}

struct Cache<K, V>(Mutex<HashMap<K, Arc<V>>>);

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V> Cache<K, V> {
    fn get_or_try(&self, key: K, make: impl FnOnce() -> anyhow::Result<V>) -> anyhow::Result<Arc<V>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = map.get(&key) {
            return Ok(value.clone());
        }
        let value = Arc::new(make()?);
        map.insert(key, value.clone());
        Ok(value)
    }

    fn retain(&self, used: &[K]) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|key, _| used.contains(key));
    }
}
