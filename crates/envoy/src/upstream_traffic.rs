//! LoadBalancerPolicy, ConnectionPolicy and ActiveHealthCheckPolicy on an upstream's Envoy cluster, and the hash a route
//! asks for when its destination is balanced by consistent hashing (a ring hash cluster picks
//! an endpoint by the hash its route computes).

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    CommonLbConfig, LbConfig, LbPolicy as EnvoyLbPolicy, LeastRequestLbConfig, RoundRobinLbConfig, SlowStartConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, Cluster, UpstreamConnectionOptions};
use envoy_types::pb::envoy::config::core::v3::health_check::{self, HealthChecker};
use envoy_types::pb::envoy::config::core::v3::{HealthCheck, TcpKeepalive as EnvoyTcpKeepalive};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy, hash_policy};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt32Value;
use trellis_model::policy::{HashKey, HealthCheck as IrHealthCheck, HealthProbe, LbPolicy, UpstreamTraffic};

use crate::common::duration_ms;

pub(crate) fn apply(cluster: &mut Cluster, traffic: &UpstreamTraffic) {
    let value = |v: Option<u32>| v.map(|value| UInt32Value { value });
    if let Some(policy) = traffic.lb_policy {
        cluster.lb_policy = match policy {
            LbPolicy::RoundRobin => EnvoyLbPolicy::RoundRobin,
            LbPolicy::LeastRequest => EnvoyLbPolicy::LeastRequest,
            LbPolicy::Random => EnvoyLbPolicy::Random,
            LbPolicy::RingHash => EnvoyLbPolicy::RingHash,
        } as i32;
    }
    if let Some(ms) = traffic.warmup_ms {
        cluster.lb_config = slow_start(cluster.lb_policy, ms);
    }
    if traffic.healthy_panic_threshold_basis_points.is_some() || traffic.update_merge_window_ms.is_some() {
        cluster.common_lb_config = Some(CommonLbConfig {
            healthy_panic_threshold: traffic.healthy_panic_threshold_basis_points.map(|bp| Percent {
                value: f64::from(bp) / 100.0,
            }),
            update_merge_window: traffic.update_merge_window_ms.map(duration_ms),
            ..Default::default()
        });
    }
    if let Some(ms) = traffic.connect_timeout_ms {
        cluster.connect_timeout = Some(duration_ms(ms));
    }
    let limits = [
        traffic.max_connections,
        traffic.max_pending_requests,
        traffic.max_requests,
        traffic.max_retries,
    ];
    if limits.iter().any(Option::is_some) {
        cluster.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: value(traffic.max_connections),
                max_pending_requests: value(traffic.max_pending_requests),
                max_requests: value(traffic.max_requests),
                max_retries: value(traffic.max_retries),
                // Exports `remaining_*` gauges: how close the upstream is to its limits.
                track_remaining: true,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    if let Some(check) = &traffic.health_check {
        cluster.health_checks = vec![health_check(check)];
    }
    if let Some(keepalive) = &traffic.tcp_keepalive {
        cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(EnvoyTcpKeepalive {
                keepalive_probes: value(keepalive.probes),
                keepalive_time: value(keepalive.time_s),
                keepalive_interval: value(keepalive.interval_s),
            }),
            ..Default::default()
        });
    }
}

/// Envoy's slow start for a cluster balanced by `policy`: a new endpoint's weight grows from
/// 10% to full over `ms` (Istio's `warmupDurationSecs`). Only round robin and least request
/// have one.
fn slow_start(policy: i32, ms: u64) -> Option<LbConfig> {
    let slow_start_config = Some(SlowStartConfig {
        slow_start_window: Some(duration_ms(ms)),
        ..Default::default()
    });
    if policy == EnvoyLbPolicy::RoundRobin as i32 {
        Some(LbConfig::RoundRobinLbConfig(RoundRobinLbConfig { slow_start_config }))
    } else if policy == EnvoyLbPolicy::LeastRequest as i32 {
        Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            slow_start_config,
            ..Default::default()
        }))
    } else {
        None
    }
}

fn health_check(check: &IrHealthCheck) -> HealthCheck {
    let value = |value| Some(UInt32Value { value });
    let checker = match &check.probe {
        HealthProbe::Tcp => HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default()),
        HealthProbe::Http {
            path,
            host,
            expected_statuses,
        } => HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: path.clone(),
            host: host.clone(),
            expected_statuses: expected_statuses
                .iter()
                .map(|(start, end)| Int64Range {
                    start: i64::from(*start),
                    end: i64::from(*end),
                })
                .collect(),
            ..Default::default()
        }),
    };
    HealthCheck {
        timeout: Some(duration_ms(check.timeout_ms)),
        interval: Some(duration_ms(check.interval_ms)),
        unhealthy_threshold: value(check.unhealthy_threshold),
        healthy_threshold: value(check.healthy_threshold),
        no_traffic_interval: check.no_traffic_interval_ms.map(duration_ms),
        health_checker: Some(checker),
        ..Default::default()
    }
}

pub(crate) fn hash_policies(keys: &[HashKey]) -> Vec<HashPolicy> {
    keys.iter()
        .map(|key| HashPolicy {
            policy_specifier: Some(match key {
                HashKey::Header(name) => hash_policy::PolicySpecifier::Header(hash_policy::Header {
                    header_name: name.clone(),
                    ..Default::default()
                }),
                HashKey::Cookie { name, path, ttl_ms } => hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
                    name: name.clone(),
                    path: path.clone(),
                    ttl: ttl_ms.map(duration_ms),
                    ..Default::default()
                }),
                HashKey::SourceIp => {
                    hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
                        source_ip: true,
                    })
                }
                HashKey::QueryParameter(name) => {
                    hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
                }
            }),
            terminal: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(traffic: UpstreamTraffic) -> Cluster {
        let mut cluster = Cluster {
            lb_policy: EnvoyLbPolicy::RoundRobin as i32,
            ..Default::default()
        };
        apply(&mut cluster, &traffic);
        cluster
    }

    fn window(cluster: &Cluster) -> Option<u64> {
        let config = match cluster.lb_config.as_ref()? {
            LbConfig::RoundRobinLbConfig(c) => c.slow_start_config.as_ref(),
            LbConfig::LeastRequestLbConfig(c) => c.slow_start_config.as_ref(),
            _ => None,
        };
        let window = config?.slow_start_window.as_ref()?;
        Some(window.seconds as u64 * 1000 + window.nanos as u64 / 1_000_000)
    }

    #[test]
    fn warmup_is_a_slow_start_window_for_round_robin_and_least_request() {
        let round_robin = with(UpstreamTraffic {
            warmup_ms: Some(10_000),
            ..Default::default()
        });
        assert_eq!(window(&round_robin), Some(10_000));
        let least_request = with(UpstreamTraffic {
            lb_policy: Some(LbPolicy::LeastRequest),
            warmup_ms: Some(2_500),
            ..Default::default()
        });
        assert!(matches!(
            least_request.lb_config,
            Some(LbConfig::LeastRequestLbConfig(_))
        ));
        assert_eq!(window(&least_request), Some(2_500));
        // Random has no slow start; nothing to warm up without a warm-up.
        let random = with(UpstreamTraffic {
            lb_policy: Some(LbPolicy::Random),
            warmup_ms: Some(10_000),
            ..Default::default()
        });
        assert_eq!(random.lb_config, None);
        assert_eq!(with(UpstreamTraffic::default()).lb_config, None);
    }
}
