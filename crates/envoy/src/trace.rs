//! Request tracing: every HTTP connection manager of a proxy gets Envoy's OpenTelemetry tracer
//! (W3C `traceparent` in and out, spans over OTLP/gRPC to a collector cluster), sampling a
//! percentage of the requests that arrive without a sampling decision. A request that does carry
//! one (a `traceparent` from the client's sidecar) follows it, so both sidecars of a call land in
//! one trace.
//!
//! Applied after the listeners are built, to whatever HCMs they hold: the sidecar and ingress
//! builders stay unaware of it, and a proxy without tracing costs nothing.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::util::pack_any;
use prost::Message;

use crate::ProxyResources;
use crate::common;

/// The cluster that leads to the OTLP collector.
pub const OTLP_COLLECTOR_CLUSTER: &str = "otlp_collector";
const OPENTELEMETRY_TRACER: &str = "envoy.tracers.opentelemetry";

/// Where a proxy sends its spans, how many requests it samples, and as which service.
#[derive(Debug, Clone, Copy)]
pub struct TraceSpec<'a> {
    /// An IP address or a DNS name.
    pub collector_address: &'a str,
    pub collector_port: u16,
    /// Percentage (0–100) of requests without a sampling decision that are traced.
    pub sampling_percent: f64,
    /// The spans' `service.name`, e.g. `reviews.bookinfo`.
    pub service_name: &'a str,
}

/// Turns tracing on in every HTTP connection manager of `resources` and adds the collector
/// cluster. Listeners without one (TCP passthrough) are left alone.
pub fn with_tracing(resources: &mut ProxyResources, spec: &TraceSpec) {
    let mut traced = false;
    for listener in &mut resources.listeners {
        let filters = listener
            .filter_chains
            .iter_mut()
            .chain(listener.default_filter_chain.as_mut())
            .flat_map(|chain| chain.filters.iter_mut())
            .filter(|f| f.name == common::HCM_FILTER);
        for filter in filters {
            let Some(ConfigType::TypedConfig(any)) = &mut filter.config_type else {
                continue;
            };
            // Built by this crate, so it decodes; anything else is left as it is.
            let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            hcm.tracing = Some(hcm_tracing(spec));
            *any = pack_any(hcm);
            traced = true;
        }
    }
    if traced {
        resources.clusters.push(collector_cluster(spec));
    }
}

fn hcm_tracing(spec: &TraceSpec) -> http_connection_manager::Tracing {
    let config = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                cluster_name: OTLP_COLLECTOR_CLUSTER.to_string(),
                ..Default::default()
            })),
            timeout: Some(common::duration_ms(2_000)),
            ..Default::default()
        }),
        service_name: spec.service_name.to_string(),
        ..Default::default()
    };
    http_connection_manager::Tracing {
        random_sampling: Some(Percent {
            value: spec.sampling_percent.clamp(0.0, 100.0),
        }),
        provider: Some(envoy_types::pb::envoy::config::trace::v3::tracing::Http {
            name: OPENTELEMETRY_TRACER.to_string(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(pack_any(config))),
        }),
        ..Default::default()
    }
}

/// HTTP/2 (OTLP is gRPC) to the collector; a DNS name is resolved by Envoy and kept fresh.
fn collector_cluster(spec: &TraceSpec) -> Cluster {
    let mut cluster = common::static_cluster(OTLP_COLLECTOR_CLUSTER, spec.collector_address, spec.collector_port);
    if spec.collector_address.parse::<std::net::IpAddr>().is_err() {
        cluster.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
    }
    common::with_http2(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::mk_cluster_config;

    fn mk_spec(address: &str, sampling_percent: f64) -> TraceSpec<'_> {
        TraceSpec {
            collector_address: address,
            collector_port: 4317,
            sampling_percent,
            service_name: "reviews.default",
        }
    }

    fn hcms(resources: &ProxyResources) -> Vec<HttpConnectionManager> {
        resources
            .listeners
            .iter()
            .flat_map(|l| &l.filter_chains)
            .flat_map(|c| &c.filters)
            .filter(|f| f.name == common::HCM_FILTER)
            .filter_map(|f| match &f.config_type {
                Some(ConfigType::TypedConfig(any)) => HttpConnectionManager::decode(any.value.as_slice()).ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_http_listener_traces_to_the_collector_as_the_workload() {
        let ir = mk_cluster_config();
        let workload = crate::testing::mk_workload();
        let spec = crate::SidecarSpec {
            workload: &workload,
            outbound_address: "127.0.0.1",
            outbound_port: 15001,
            inbound_address: "127.0.0.1",
            access_log: &trellis_model::access_log::AccessLogSink::Stdout,
        };
        let mut resources = crate::sidecar(&ir, &spec);
        with_tracing(&mut resources, &mk_spec("10.0.0.7", 25.0));
        let hcms = hcms(&resources);
        assert!(hcms.len() >= 2, "outbound and inbound listeners: {}", hcms.len());
        for hcm in hcms {
            let tracing = hcm.tracing.expect("tracing on every HCM");
            assert_eq!(tracing.random_sampling.map(|p| p.value), Some(25.0));
            let provider = tracing.provider.expect("a provider");
            assert_eq!(provider.name, OPENTELEMETRY_TRACER);
            let Some(tracing::http::ConfigType::TypedConfig(any)) = provider.config_type else {
                panic!("typed config")
            };
            let config = OpenTelemetryConfig::decode(any.value.as_slice()).unwrap();
            assert_eq!(config.service_name, "reviews.default");
            let Some(grpc_service::TargetSpecifier::EnvoyGrpc(target)) =
                config.grpc_service.and_then(|g| g.target_specifier)
            else {
                panic!("an Envoy gRPC service")
            };
            assert_eq!(target.cluster_name, OTLP_COLLECTOR_CLUSTER);
        }
        let collector: Vec<_> = resources
            .clusters
            .iter()
            .filter(|c| c.name == OTLP_COLLECTOR_CLUSTER)
            .collect();
        assert_eq!(collector.len(), 1);
        assert_eq!(
            collector[0].cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32
            ))
        );
    }

    #[test]
    fn a_collector_by_name_is_resolved_and_sampling_stays_a_percentage() {
        let mut resources = ProxyResources {
            listeners: crate::sidecar(
                &mk_cluster_config(),
                &crate::SidecarSpec {
                    workload: &crate::testing::mk_workload(),
                    outbound_address: "127.0.0.1",
                    outbound_port: 15001,
                    inbound_address: "127.0.0.1",
                    access_log: &trellis_model::access_log::AccessLogSink::Stdout,
                },
            )
            .listeners,
            ..Default::default()
        };
        with_tracing(&mut resources, &mk_spec("otel-collector.observability", 250.0));
        assert_eq!(
            resources.clusters[0].cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32
            ))
        );
        let sampling = hcms(&resources)[0]
            .tracing
            .as_ref()
            .unwrap()
            .random_sampling
            .unwrap()
            .value;
        assert_eq!(sampling, 100.0);
    }

    #[test]
    fn a_proxy_without_http_listeners_gets_no_collector() {
        let mut resources = ProxyResources::default();
        with_tracing(&mut resources, &mk_spec("10.0.0.7", 1.0));
        assert!(resources.clusters.is_empty());
    }
}
