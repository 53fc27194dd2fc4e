//! `GET /api/v1/clusters/{cluster}/proxies/{id}/config`: one proxy's live Envoy config, asked of
//! its cluster's agent over the relay (the agent reads the proxy's loopback admin). Admins only
//! by default (RBAC `get` on `trellis.io/proxyconfigs`): a config dump shows every route, host
//! and certificate of the proxy, though Envoy redacts its private keys.
//!
//! Each open relay stream takes the requests for its cluster from a channel here; replies come
//! back on the stream and complete the request of the same id, from the same cluster only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::Mgmt;

/// How long an operator waits for the agent and its Envoy.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at once, over all clusters: each holds a waiting API call.
const MAX_PENDING: usize = 64;

type Answer = Result<Vec<u8>, String>;

#[derive(Default)]
pub struct ProxyQueries {
    /// Cluster → the request channel of its open relay stream.
    streams: Mutex<HashMap<String, mpsc::Sender<(u64, String)>>>,
    /// Request id → (cluster asked, where its answer goes).
    pending: Mutex<HashMap<u64, (String, oneshot::Sender<Answer>)>>,
    next_id: AtomicU64,
}

impl ProxyQueries {
    /// Called by a relay stream as it starts: requests for `cluster` now go to it (a newer
    /// stream of the same cluster takes over from an older one).
    pub fn open(&self, cluster: &str) -> mpsc::Receiver<(u64, String)> {
        let (tx, rx) = mpsc::channel(8);
        self.streams.lock().expect("lock").insert(cluster.to_string(), tx);
        rx
    }

    /// An agent's reply; ignored unless it answers a request sent to its own cluster.
    pub fn answer(&self, cluster: &str, request_id: u64, answer: Answer) {
        let mut pending = self.pending.lock().expect("lock");
        if pending.get(&request_id).is_some_and(|(asked, _)| asked == cluster)
            && let Some((_, reply)) = pending.remove(&request_id)
        {
            let _ = reply.send(answer);
        }
    }

    async fn ask(&self, cluster: &str, proxy_id: &str) -> Result<Vec<u8>, (StatusCode, String)> {
        let stream = self.streams.lock().expect("lock").get(cluster).cloned();
        let Some(stream) = stream.filter(|s| !s.is_closed()) else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cluster {cluster}'s agent is not connected"),
            ));
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("lock");
            if pending.len() >= MAX_PENDING {
                return Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many proxy config requests in flight; try again".into(),
                ));
            }
            pending.insert(id, (cluster.to_string(), reply));
        }
        let sent = stream.send((id, proxy_id.to_string())).await.is_ok();
        let result = match (sent, tokio::time::timeout(ANSWER_TIMEOUT, answer).await) {
            (false, _) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cluster {cluster}'s agent disconnected"),
            )),
            (true, Ok(Ok(Ok(dump)))) => Ok(dump),
            (true, Ok(Ok(Err(error)))) => Err((StatusCode::NOT_FOUND, error)),
            (true, Ok(Err(_))) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cluster {cluster}'s agent disconnected"),
            )),
            (true, Err(_)) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!("cluster {cluster}'s agent did not answer within {ANSWER_TIMEOUT:?}"),
            )),
        };
        self.pending.lock().expect("lock").remove(&id);
        result
    }
}

pub async fn proxy_config(State(mgmt): State<Arc<Mgmt>>, Path((cluster, proxy)): Path<(String, String)>) -> Response {
    // Ids are short and printable (`sidecar~frontend.demo`); anything else names no proxy.
    if proxy.len() > 253 || proxy.chars().any(|c| c.is_control()) {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "not a proxy id"}))).into_response();
    }
    match mgmt.proxy_queries.ask(&cluster, &proxy).await {
        Ok(dump) => ([(header::CONTENT_TYPE, "application/json")], dump).into_response(),
        Err((StatusCode::SERVICE_UNAVAILABLE, error)) => {
            // The agent's stream is on another replica: say which, so the operator asks it.
            let elsewhere = mgmt
                .elsewhere
                .lock()
                .expect("presence lock")
                .get(&cluster)
                .map(|(r, _)| r.clone());
            let error = match elsewhere {
                Some(replica) => format!(
                    "cluster {cluster}'s agent is connected to management server replica {replica}, not to this one: ask that replica's API"
                ),
                None => error,
            };
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": error }))).into_response()
        }
        Err((status, error)) => (status, axum::Json(json!({ "error": error }))).into_response(),
    }
}
