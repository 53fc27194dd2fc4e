//! `GET /api/v1/graph`: the service graph with live golden signals per edge, read from the
//! operator's Prometheus (`--prometheus-url`) as it scrapes the proxies' Envoy stats
//! (`/stats/prometheus`, each target labelled with its `app`, as Kubernetes pod labels are).
//!
//! An edge is what a client's sidecar counts for one mesh destination: its outbound cluster
//! `outbound|<port>|<subset>|<host>` (dots carried as `_`, see `trellis_envoy::stat_name`).
//! Request rate and 5xx rate over the last minute, and p99 latency from the upstream request
//! time histogram.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};

use super::Mgmt;

const OUTBOUND: &str = r#"envoy_cluster_name=~"outbound[|].*""#;
/// Each query to Prometheus; the page polls, so a slow Prometheus must not pile up requests.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Series read per query: a graph of more edges than this is cut, and says so.
const MAX_SERIES: usize = 2000;

#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Edge {
    pub source: String,
    /// The destination host, e.g. `reviews.bookinfo.svc.cluster.local`.
    pub destination: String,
    pub port: String,
    /// The subset (`v1`) when the route picked one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subset: String,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

pub async fn graph(State(mgmt): State<Arc<Mgmt>>) -> Json<Value> {
    let Some(prometheus) = mgmt.api.prometheus_url.clone() else {
        return Json(json!({
            "source": null,
            "edges": [],
            "message": "no metrics source: start the management server with --prometheus-url pointing at a Prometheus that scrapes the proxies"
        }));
    };
    let queries = [
        format!("sum by (app, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total{{{OUTBOUND}}}[1m]))"),
        format!(
            "sum by (app, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"5\",{OUTBOUND}}}[1m]))"
        ),
        format!(
            "histogram_quantile(0.99, sum by (app, envoy_cluster_name, le) (rate(envoy_cluster_upstream_rq_time_bucket{{{OUTBOUND}}}[1m])))"
        ),
    ];
    let mut results = Vec::new();
    for query in &queries {
        match instant_query(&prometheus, query).await {
            Ok(series) => results.push(series),
            Err(error) => {
                tracing::warn!(%prometheus, error = %format!("{error:#}"), "cannot read the service graph from Prometheus");
                return Json(json!({
                    "source": prometheus,
                    "edges": [],
                    "message": format!("Prometheus at {prometheus} did not answer: {error:#}"),
                }));
            }
        }
    }
    let mut edges: BTreeMap<(String, String), Edge> = BTreeMap::new();
    for (index, series) in results.into_iter().enumerate() {
        for (source, cluster, value) in series {
            let Some(edge) = edge_for(&source, &cluster) else {
                continue;
            };
            let entry = edges.entry((source, cluster)).or_insert(edge);
            match index {
                0 => entry.requests_per_second = value,
                1 => entry.errors_per_second = value,
                _ => entry.p99_ms = value.is_finite().then_some(value),
            }
        }
    }
    let edges: Vec<Edge> = edges.into_values().filter(|e| e.requests_per_second > 0.0).collect();
    Json(json!({"source": prometheus, "window": "1m", "edges": edges}))
}

/// The edge a client `app` has to the destination of its outbound `cluster`.
fn edge_for(app: &str, cluster: &str) -> Option<Edge> {
    let mut parts = cluster.splitn(4, '|');
    (parts.next()? == "outbound").then_some(())?;
    let port = parts.next()?.to_string();
    let subset = parts.next()?.to_string();
    let host = parts.next()?.replace('_', ".");
    Some(Edge {
        source: if app.is_empty() { "unknown".into() } else { app.into() },
        destination: host,
        port,
        subset,
        ..Default::default()
    })
}

/// `(app, envoy_cluster_name, value)` of each series an instant query yields.
async fn instant_query(prometheus: &str, query: &str) -> anyhow::Result<Vec<(String, String, f64)>> {
    let url = format!("{prometheus}/api/v1/query?query={}", trellis_cli::client::encode(query));
    let response = trellis_support::httpc::get(&url, QUERY_TIMEOUT).await?;
    anyhow::ensure!(response.status == 200, "{} answered {}", prometheus, response.status);
    let body: Value = serde_json::from_str(&response.body)?;
    let series = body["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(series
        .iter()
        .take(MAX_SERIES)
        .filter_map(|s| {
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((
                s["metric"]["app"].as_str().unwrap_or_default().to_string(),
                s["metric"]["envoy_cluster_name"].as_str()?.to_string(),
                value,
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_cluster_is_an_edge_to_its_host_and_subset() {
        let edge = edge_for("frontend", "outbound|9080|v2|reviews_bookinfo_svc_cluster_local").unwrap();
        assert_eq!(edge.source, "frontend");
        assert_eq!(edge.destination, "reviews.bookinfo.svc.cluster.local");
        assert_eq!((edge.port.as_str(), edge.subset.as_str()), ("9080", "v2"));
        assert_eq!(
            edge_for("", "outbound|80||backend_mesh_internal").unwrap().source,
            "unknown"
        );
    }

    #[test]
    fn other_clusters_are_not_edges() {
        assert!(edge_for("frontend", "inbound|8080").is_none());
        assert!(edge_for("frontend", "xds").is_none());
    }
}
