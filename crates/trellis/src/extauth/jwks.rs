//! Remote key sets: fetched over HTTP or HTTPS (the service's [`HttpClient`], which trusts the
//! system's roots and `--ca-file`) on first use, refreshed every `refreshInterval` and
//! when a token names a `kid` the cached set lacks (at most once per [`MIN_REFETCH`], so
//! tokens with made-up kids cannot make the service hammer the issuer).
//!
//! A failed refresh keeps the last good set, as Envoy's jwt_authn does; a check fails closed
//! (401) only while no set has ever been fetched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_extauth::Jwks;

use crate::httpc::HttpClient;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_REFETCH: Duration = Duration::from_secs(5);

pub struct RemoteJwks {
    url: String,
    refresh_interval: Duration,
    http: HttpClient,
    /// Held across a fetch, so concurrent checks wait for one fetch instead of starting many.
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<Jwks>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl RemoteJwks {
    pub fn new(url: &str, refresh_interval: Duration, http: HttpClient) -> RemoteJwks {
        RemoteJwks {
            url: url.to_string(),
            refresh_interval,
            http,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The key set to verify a token with `kid`; None when none could ever be fetched.
    pub async fn keys(&self, kid: Option<&str>) -> Option<Arc<Jwks>> {
        let mut state = self.state.lock().await;
        let stale = state.fetched_at.is_none_or(|t| t.elapsed() >= self.refresh_interval);
        let lacks_kid = kid.is_some_and(|kid| state.keys.as_ref().is_none_or(|keys| !keys.has_kid(kid)));
        let may_fetch = state.attempted_at.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        if (stale || lacks_kid) && may_fetch {
            state.attempted_at = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                    state.keys = Some(Arc::new(keys));
                    state.fetched_at = Some(Instant::now());
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    tracing::warn!(url = %self.url, %error, "cannot fetch JWKS; keeping the last good key set")
                }
            }
        }
        state.keys.clone()
    }

    async fn fetch(&self) -> anyhow::Result<Jwks> {
        let response = self.http.get(&self.url, FETCH_TIMEOUT).await?;
        anyhow::ensure!(response.status == 200, "HTTP {}", response.status);
        Ok(Jwks::parse(&response.body)?)
    }
}
