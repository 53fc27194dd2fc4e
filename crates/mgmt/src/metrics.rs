//! The management server's metrics and its admin endpoints (/metrics, /healthz, /readyz).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Mgmt;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InsightLabel {
    pub code: String,
    pub severity: String,
}

#[derive(Clone)]
pub struct MgmtMetrics {
    pub translations_total: Counter,
    /// Translations made by the leading replica and served by this one.
    pub translations_followed_total: Counter,
    pub translation_seconds: Histogram,
    /// Gloo's name for the same measure, so Gloo users' dashboards and alerts carry over.
    pub gloo_translation_time: Histogram,
    /// Resources whose last translation left them WARNING, and FAILED or INVALID (Gloo's
    /// `translation_warning` and `translation_error`); set at every scrape.
    pub translation_warnings: Gauge,
    pub translation_errors: Gauge,
    /// Gloo's `relay_push_clients_warmed`: 1 while a cluster's agent is connected and holds the
    /// current config; set at every scrape.
    pub clients_warmed: Family<ClusterLabel, Gauge>,
    pub agents_connected: Family<ClusterLabel, Gauge>,
    pub config_pushes_total: Family<ClusterLabel, Counter>,
    pub config_nacks_total: Family<ClusterLabel, Counter>,
    pub applies_total: Family<ResultLabel, Counter>,
    pub relay_refused_total: Family<ReasonLabel, Counter>,
    pub certificates_issued_total: Family<ResultLabel, Counter>,
    /// Signing requests this replica refused because it does not lead (the client asks another).
    pub signing_sent_to_leader_total: Counter,
    pub api_unauthenticated_total: Counter,
    pub api_forbidden_total: Counter,
    pub api_refusals_unaudited_total: Counter,
    /// Active, unsilenced insights by code and severity; set at every scrape.
    pub insights: Family<InsightLabel, Gauge>,
    /// 1 while this replica leads the management plane (always, with the single-server store).
    pub leader: Gauge,
}

impl MgmtMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = MgmtMetrics {
            translations_total: Counter::default(),
            translations_followed_total: Counter::default(),
            translation_seconds: Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            gloo_translation_time: Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            translation_warnings: Gauge::default(),
            translation_errors: Gauge::default(),
            clients_warmed: Family::default(),
            agents_connected: Family::default(),
            config_pushes_total: Family::default(),
            config_nacks_total: Family::default(),
            applies_total: Family::default(),
            relay_refused_total: Family::default(),
            certificates_issued_total: Family::default(),
            signing_sent_to_leader_total: Counter::default(),
            api_unauthenticated_total: Counter::default(),
            api_forbidden_total: Counter::default(),
            api_refusals_unaudited_total: Counter::default(),
            insights: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "trellis_mgmt_leader",
            "1 while this management server replica leads (translation duties only one may do)",
            metrics.leader.clone(),
        );
        registry.register(
            "trellis_mgmt_insights",
            "Active, unsilenced insights by code and severity (see `trellis insights`)",
            metrics.insights.clone(),
        );
        registry.register(
            "trellis_mgmt_api_refusals_unaudited",
            "Refused API requests over a user's audit budget (30 a minute), counted but not recorded",
            metrics.api_refusals_unaudited_total.clone(),
        );
        registry.register(
            "trellis_mgmt_api_unauthenticated_requests",
            "API requests refused for missing or invalid credentials",
            metrics.api_unauthenticated_total.clone(),
        );
        registry.register(
            "trellis_mgmt_api_forbidden_requests",
            "API requests refused by RBAC",
            metrics.api_forbidden_total.clone(),
        );
        registry.register(
            "trellis_mgmt_translations",
            "Translations run",
            metrics.translations_total.clone(),
        );
        registry.register(
            "trellis_mgmt_translations_followed",
            "Translations of the leading replica this replica served instead of translating",
            metrics.translations_followed_total.clone(),
        );
        registry.register(
            "trellis_mgmt_translation_seconds",
            "Time to translate one snapshot",
            metrics.translation_seconds.clone(),
        );
        registry.register(
            "gloo_mesh_translation_time_sec",
            "Seconds each translation took (Gloo's name for trellis_mgmt_translation_seconds)",
            metrics.gloo_translation_time.clone(),
        );
        registry.register(
            "translation_warning",
            "Resources the last translation left in WARNING (Gloo's name)",
            metrics.translation_warnings.clone(),
        );
        registry.register(
            "translation_error",
            "Resources the last translation left FAILED or INVALID (Gloo's name)",
            metrics.translation_errors.clone(),
        );
        registry.register(
            "relay_push_clients_warmed",
            "1 while a cluster's agent is connected and acknowledged the current config (Gloo's name)",
            metrics.clients_warmed.clone(),
        );
        registry.register(
            "trellis_mgmt_relay_agents_connected",
            "Relay streams open per cluster",
            metrics.agents_connected.clone(),
        );
        // Gloo's names for the same streams, so its users' dashboards and alerts carry over:
        // each relay stream both pushes the cluster's discovery and pulls its translated config.
        registry.register(
            "relay_push_clients_connected",
            "Agents connected to push their cluster's discovery, per cluster (Gloo's name)",
            metrics.agents_connected.clone(),
        );
        registry.register(
            "relay_pull_clients_connected",
            "Agents connected to pull their cluster's config, per cluster (Gloo's name)",
            metrics.agents_connected.clone(),
        );
        registry.register(
            "trellis_mgmt_relay_config_pushes",
            "Configs sent to agents",
            metrics.config_pushes_total.clone(),
        );
        registry.register(
            "trellis_mgmt_relay_config_nacks",
            "Configs agents rejected",
            metrics.config_nacks_total.clone(),
        );
        registry.register(
            "trellis_mgmt_api_applies",
            "Apply requests by result",
            metrics.applies_total.clone(),
        );
        registry.register(
            "trellis_mgmt_relay_refused",
            "Relay connections and calls refused, by reason",
            metrics.relay_refused_total.clone(),
        );
        registry.register(
            "trellis_mgmt_certificates_issued",
            "Certificates signed for agents, by kind",
            metrics.certificates_issued_total.clone(),
        );
        registry.register(
            "trellis_mgmt_signing_sent_to_leader",
            "Signing requests refused by this replica because it does not lead; the client asks another",
            metrics.signing_sent_to_leader_total.clone(),
        );
        metrics
    }

    /// Counts one refusal; `reason` is one of a fixed set of short words.
    pub fn refused(&self, reason: &str) {
        self.relay_refused_total
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}

impl trellis_relay::listener::Refusals for MgmtMetrics {
    fn refused(&self, reason: &str) {
        MgmtMetrics::refused(self, reason)
    }
}

/// The Prometheus page. Insights are evaluated at each scrape, so their gauge is as fresh as
/// the scrape.
async fn metrics_page(State((registry, mgmt)): State<(Arc<Registry>, Arc<Mgmt>)>) -> impl axum::response::IntoResponse {
    let _ = tokio::task::spawn_blocking(move || {
        super::insights::refresh_gauge(&mgmt);
        refresh_translation_gauges(&mgmt);
    })
    .await;
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::new(),
        ),
    }
}

/// The gauges read off the latest translation and the agents' state.
fn refresh_translation_gauges(mgmt: &Mgmt) {
    let published = mgmt.published();
    let (mut warnings, mut errors) = (0, 0);
    for status in published.statuses.values() {
        match status.state.as_str() {
            "WARNING" => warnings += 1,
            "FAILED" | "INVALID" => errors += 1,
            _ => {}
        }
    }
    mgmt.metrics.translation_warnings.set(warnings);
    mgmt.metrics.translation_errors.set(errors);
    for (cluster, status) in super::api::cluster_statuses(mgmt) {
        let warmed = status["connected"] == true
            && status["currentVersion"].is_string()
            && status["ackedVersion"] == status["currentVersion"];
        mgmt.metrics
            .clients_warmed
            .get_or_create(&ClusterLabel { cluster })
            .set(i64::from(warmed));
    }
}

pub fn admin_router(registry: Arc<Registry>, mgmt: Arc<Mgmt>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State((_, mgmt)): State<(Arc<Registry>, Arc<Mgmt>)>| async move {
                match mgmt.stored() {
                    Ok(_) => (StatusCode::OK, "ready\n"),
                    Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
                }
            }),
        )
        .with_state((registry, mgmt))
}
