//! `GET /metrics/proxies` on the agent: every registered proxy's Envoy stats in one Prometheus
//! scrape (as Istio's merged metrics do per pod, here per cluster), each sample labelled with the
//! proxy it came from: `proxy`, `cluster`, and for sidecars `app`, `version`, `namespace`,
//! `workload`. A Prometheus then needs one target per cluster, and dashboards group golden
//! signals by service (`app`) and edge (`app` → `envoy_cluster_name`) with no relabelling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Agent;
use super::registry::ProxyRegistration;

/// Each Envoy's answer; a proxy that does not answer in time is left out of this scrape.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// One Envoy's stats above this are left out (a sidecar's are a few hundred KB).
const MAX_STATS_BYTES: usize = 16 * 1024 * 1024;

pub async fn serve(agent: Arc<Agent>) -> Response {
    let targets: Vec<(u16, Vec<(String, String)>)> = agent
        .registry
        .all_shared()
        .into_iter()
        .filter_map(|(id, registration)| {
            let port = agent.registry.admin_port(&id)?;
            Some((port, labels(&agent.cluster, &id, &registration)))
        })
        .collect();
    let mut scrapes = tokio::task::JoinSet::new();
    for (port, labels) in targets {
        scrapes.spawn(async move {
            let url = format!("http://127.0.0.1:{port}/stats/prometheus");
            match trellis_support::httpc::get(&url, STATS_TIMEOUT).await {
                Ok(response) if response.status == 200 && response.body.len() <= MAX_STATS_BYTES => {
                    Some((labels, response.body))
                }
                _ => None,
            }
        });
    }
    let mut parts: Vec<_> = scrapes.join_all().await.into_iter().flatten().collect();
    // The same order on every scrape, whichever Envoy answered first.
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        merge(&parts),
    )
        .into_response()
}

fn labels(cluster: &str, id: &str, registration: &ProxyRegistration) -> Vec<(String, String)> {
    let mut labels = vec![
        ("proxy".to_string(), id.to_string()),
        ("cluster".to_string(), cluster.to_string()),
    ];
    if let ProxyRegistration::Sidecar { workload, .. } = registration {
        let app = workload
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| workload.service.clone());
        labels.push(("app".into(), app));
        if let Some(version) = workload.labels.get("version") {
            labels.push(("version".into(), version.clone()));
        }
        labels.push(("namespace".into(), workload.namespace.clone()));
        labels.push(("workload".into(), workload.name.clone()));
    }
    labels
}

/// Merges Prometheus text expositions: one `# TYPE` line per metric family, then that family's
/// samples from every part, each with its part's labels first. (A family's samples must be
/// together in one exposition; Envoy's own output has each family once.)
pub fn merge(parts: &[(Vec<(String, String)>, String)]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (labels, text) in parts {
        let extra: Vec<String> = labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect();
        let extra = extra.join(",");
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                family = words.next().unwrap_or_default().to_string();
                let kind = words.next().unwrap_or("untyped").to_string();
                if !families.contains_key(&family) {
                    order.push(family.clone());
                    families.insert(family.clone(), (kind, Vec::new()));
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let sample = with_labels(line, &extra);
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            // Samples outside any TYPE (or of another family) stand as untyped families.
            let key = if !family.is_empty() && name.starts_with(family.as_str()) {
                family.clone()
            } else {
                name.to_string()
            };
            if !families.contains_key(&key) {
                order.push(key.clone());
                families.insert(key.clone(), ("untyped".into(), Vec::new()));
            }
            families.get_mut(&key).expect("inserted above").1.push(sample);
        }
    }
    let mut out = String::new();
    for name in order {
        let (kind, samples) = &families[&name];
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for sample in samples {
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// `name{a="b"} 1` → `name{<extra>,a="b"} 1`; `name 1` → `name{<extra>} 1`.
fn with_labels(line: &str, extra: &str) -> String {
    if extra.is_empty() {
        return line.to_string();
    }
    match (line.find('{'), line.find(' ')) {
        (Some(brace), Some(space)) if brace < space => {
            let close = if line[brace + 1..].starts_with('}') { "" } else { "," };
            format!("{}{{{extra}{close}{}", &line[..brace], &line[brace + 1..])
        }
        (_, Some(space)) => format!("{}{{{extra}}}{}", &line[..space], &line[space..]),
        _ => line.to_string(),
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(app: &str, text: &str) -> (Vec<(String, String)>, String) {
        (vec![("app".to_string(), app.to_string())], text.to_string())
    }

    #[test]
    fn families_are_merged_once_with_each_proxys_labels() {
        let frontend = "# TYPE envoy_cluster_upstream_rq_total counter\n\
                        envoy_cluster_upstream_rq_total{envoy_cluster_name=\"outbound|80||backend\"} 7\n\
                        # TYPE envoy_server_uptime gauge\n\
                        envoy_server_uptime 12\n";
        let backend = "# TYPE envoy_cluster_upstream_rq_total counter\n\
                       envoy_cluster_upstream_rq_total{envoy_cluster_name=\"inbound|80\"} 3\n";
        let merged = merge(&[part("frontend", frontend), part("back\"end", backend)]);
        assert_eq!(
            merged,
            "# TYPE envoy_cluster_upstream_rq_total counter\n\
             envoy_cluster_upstream_rq_total{app=\"frontend\",envoy_cluster_name=\"outbound|80||backend\"} 7\n\
             envoy_cluster_upstream_rq_total{app=\"back\\\"end\",envoy_cluster_name=\"inbound|80\"} 3\n\
             # TYPE envoy_server_uptime gauge\n\
             envoy_server_uptime{app=\"frontend\"} 12\n"
        );
    }

    #[test]
    fn histogram_series_stay_in_their_family() {
        let text = "# TYPE envoy_cluster_upstream_rq_time histogram\n\
                    envoy_cluster_upstream_rq_time_bucket{le=\"0.5\"} 1\n\
                    envoy_cluster_upstream_rq_time_sum{} 3\n\
                    envoy_cluster_upstream_rq_time_count 1\n";
        let merged = merge(&[part("a", text)]);
        assert_eq!(merged.matches("# TYPE").count(), 1, "{merged}");
        assert!(merged.contains("envoy_cluster_upstream_rq_time_bucket{app=\"a\",le=\"0.5\"} 1"));
        assert!(merged.contains("envoy_cluster_upstream_rq_time_sum{app=\"a\"} 3"));
        assert!(merged.contains("envoy_cluster_upstream_rq_time_count{app=\"a\"} 1"));
    }
}
