//! Remote key sets: fetched over HTTP or HTTPS (the service's [`HttpClient`], which trusts the
//! system's roots and `--ca-file`) on first use, refreshed every `refreshInterval` and
//! when a token names a `kid` the cached set lacks (at most once per [`MIN_REFETCH`], so
//! tokens with made-up kids cannot make the service hammer the issuer).
//!
//! A failed refresh keeps the last good set, as Envoy's jwt_authn does; a check fails closed
//! (503, undecided) only while no set has ever been fetched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_extauth::Jwks;

use trellis_support::httpc::HttpClient;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_REFETCH: Duration = Duration::from_secs(5);

pub struct RemoteJwks {
    url: String,
    refresh_interval: Duration,
    http: HttpClient,
    state: std::sync::Mutex<State>,
    /// Held during a fetch. Before the first set arrives, checks wait on it (one fetch for
    /// all); afterwards only the check that starts a refresh waits, the others go on with the
    /// current set, so a slow issuer does not stall every check.
    fetching: tokio::sync::Mutex<()>,
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
            state: std::sync::Mutex::new(State::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the set should be fetched now for a token with `kid`.
    fn wants_fetch(&self, kid: Option<&str>) -> bool {
        let state = self.state();
        let stale = state.fetched_at.is_none_or(|t| t.elapsed() >= self.refresh_interval);
        let lacks_kid = kid.is_some_and(|kid| state.keys.as_ref().is_none_or(|keys| !keys.has_kid(kid)));
        let may_fetch = state.attempted_at.is_none_or(|t| t.elapsed() >= MIN_REFETCH);
        (stale || lacks_kid) && may_fetch
    }

    /// The key set to verify a token with `kid`; None when none could ever be fetched.
    pub async fn keys(&self, kid: Option<&str>) -> Option<Arc<Jwks>> {
        if self.wants_fetch(kid) {
            let have_keys = self.state().keys.is_some();
            let guard = if have_keys {
                self.fetching.try_lock().ok()
            } else {
                Some(self.fetching.lock().await)
            };
            // Another check may have fetched while this one waited.
            if let Some(_guard) = guard
                && self.wants_fetch(kid)
            {
                self.state().attempted_at = Some(Instant::now());
                match self.fetch().await {
                    Ok(keys) => {
                        tracing::debug!(url = %self.url, keys = keys.len(), "fetched JWKS");
                        let mut state = self.state();
                        state.keys = Some(Arc::new(keys));
                        state.fetched_at = Some(Instant::now());
                    }
                    Err(error) => {
                        let error = format!("{error:#}");
                        tracing::warn!(url = %self.url, %error, "cannot fetch JWKS; keeping the last good key set")
                    }
                }
            }
        }
        self.state().keys.clone()
    }

    async fn fetch(&self) -> anyhow::Result<Jwks> {
        let response = self.http.get(&self.url, FETCH_TIMEOUT).await?;
        anyhow::ensure!(response.status == 200, "HTTP {}", response.status);
        Ok(Jwks::parse(&response.body)?)
    }
}
