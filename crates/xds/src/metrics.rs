//! Prometheus metrics of the ADS server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::snapshot::PUSH_ORDER;

/// Counters and gauges of the ADS server; cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    pub(crate) pushes: Family<TypeUrlLabel, Counter>,
    pub(crate) nacks: Family<TypeUrlLabel, Counter>,
    pub(crate) proxies_connected: Gauge,
    pub(crate) streams_refused: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeUrlLabel {
    type_url: String,
}

impl XdsMetrics {
    /// Creates the metrics and registers them as `trellis_xds_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register("trellis_xds_pushes", "xDS responses sent to proxies", m.pushes.clone());
        registry.register(
            "trellis_xds_nacks",
            "xDS responses rejected by proxies",
            m.nacks.clone(),
        );
        registry.register(
            "trellis_xds_proxies_connected",
            "Proxies with an open ADS stream",
            m.proxies_connected.clone(),
        );
        registry.register(
            "trellis_xds_streams_refused",
            "ADS streams refused or closed because the node's credential did not check out",
            m.streams_refused.clone(),
        );
        m
    }

    pub(crate) fn refused(&self) {
        self.streams_refused.inc();
    }

    /// Streams refused so far for a bad or missing node credential.
    pub fn refused_total(&self) -> u64 {
        self.streams_refused.get()
    }

    pub(crate) fn push(&self, type_url: &str) {
        self.pushes.get_or_create(&TypeUrlLabel::new(type_url)).inc();
    }

    pub(crate) fn nack(&self, type_url: &str) {
        self.nacks.get_or_create(&TypeUrlLabel::new(type_url)).inc();
    }

    /// Pushes counted so far for one type (for tests and diagnostics).
    pub fn pushes_total(&self, type_url: &str) -> u64 {
        self.pushes.get_or_create(&TypeUrlLabel::new(type_url)).get()
    }

    /// NACKs counted so far for one type.
    pub fn nacks_total(&self, type_url: &str) -> u64 {
        self.nacks.get_or_create(&TypeUrlLabel::new(type_url)).get()
    }

    /// Proxies currently connected.
    pub fn proxies_connected(&self) -> i64 {
        self.proxies_connected.get()
    }
}

impl TypeUrlLabel {
    /// Type URLs come from the proxy; anything but the five we serve is
    /// folded into `other` so a client cannot blow up label cardinality.
    fn new(type_url: &str) -> Self {
        let known = PUSH_ORDER.contains(&type_url);
        Self {
            type_url: if known { type_url.to_owned() } else { "other".to_owned() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::CLUSTER_TYPE;

    #[test]
    fn exposes_counters_with_type_url_labels() {
        let mut registry = Registry::default();
        let m = XdsMetrics::register(&mut registry);
        m.push(CLUSTER_TYPE);
        m.nack("type.googleapis.com/made.up.Type");
        m.proxies_connected.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!("trellis_xds_pushes_total{{type_url=\"{CLUSTER_TYPE}\"}} 1")),
            "{text}"
        );
        assert!(text.contains("trellis_xds_nacks_total{type_url=\"other\"} 1"), "{text}");
        assert!(text.contains("trellis_xds_proxies_connected 1"), "{text}");
    }
}
