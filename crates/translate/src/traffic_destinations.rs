//! LoadBalancerPolicy, ConnectionPolicy and ActiveHealthCheckPolicy on the targets their
//! `applyToDestinations` selects (every target when empty, as in Gloo); a consistent hash also
//! sets what the routes to the target hash. One policy of each kind per target, oldest first.

use trellis_api::{ConnectionConfig, LoadBalancerConfig, Resource, Spec};
use trellis_base::duration::parse_duration;
use trellis_base::duration_ms;
use trellis_model::policy::{HashKey, HealthCheck, HealthProbe, LbPolicy, TcpKeepalive, UpstreamTraffic};

use crate::Warnings;
use crate::destination_policies::{DestinationLookup, UpstreamPolicy};
use crate::outbound::{Outbound, PendingAction};
use crate::report::Report;

/// LoadBalancerPolicy and ConnectionPolicy on the targets they select, oldest first; a target
/// balanced by consistent hashing makes the routes that forward to it say what to hash.
pub(crate) fn apply(
    lookup: &DestinationLookup<'_>,
    outbound: &mut Outbound,
    policies: &mut [UpstreamPolicy],
    report: &mut Report,
    warnings: &mut Warnings,
) {
    let snapshot = lookup.snapshot;
    let mut balanced = vec![false; policies.len()];
    let mut limited = vec![false; policies.len()];
    let mut checked = vec![false; policies.len()];
    let mut hashes: Vec<Vec<HashKey>> = vec![Vec::new(); policies.len()];
    for resource in &snapshot.resources {
        let (selectors, settings, hash, taken) = match &resource.spec {
            Spec::LoadBalancerPolicy(spec) => {
                let (settings, hash) = load_balancer(resource, &spec.config, warnings);
                (&spec.apply_to_destinations, settings, hash, &mut balanced)
            }
            Spec::ConnectionPolicy(spec) => (
                &spec.apply_to_destinations,
                connection(resource, &spec.config, warnings),
                Vec::new(),
                &mut limited,
            ),
            Spec::ActiveHealthCheckPolicy(spec) => (
                &spec.apply_to_destinations,
                UpstreamTraffic {
                    health_check: Some(health_check(resource, &spec.config, warnings)),
                    ..Default::default()
                },
                Vec::new(),
                &mut checked,
            ),
            _ => continue,
        };
        let entry = report.entry(&resource.key().to_string());
        for (index, target) in outbound.targets.iter().enumerate() {
            // Gloo: an empty list applies to every destination of the policy's workspace.
            let selectors = crate::destination_policies::or_everything(selectors);
            if !crate::destination_policies::selects(&selectors, target, lookup, &resource.metadata.namespace) {
                continue;
            }
            if taken[index] {
                entry.lost.push(format!("destination {}:{}", target.host, target.port));
                continue;
            }
            taken[index] = true;
            entry.applied += 1;
            let traffic = policies[index].traffic.get_or_insert_with(Default::default);
            merge(traffic, &settings);
            // Probes name the destination's host, as its clients do (Envoy would send the
            // cluster's name, which no virtual host serves).
            if let Some(HealthCheck {
                probe: HealthProbe::Http { host, .. },
                ..
            }) = &mut traffic.health_check
                && host.is_empty()
            {
                *host = target.host.clone();
            }
            if !hash.is_empty() {
                hashes[index] = hash.clone();
            }
        }
    }
    if hashes.iter().all(Vec::is_empty) {
        return;
    }
    let ingress = outbound.ingress.iter_mut().map(|(_, host)| host);
    for host in outbound.virtual_hosts.iter_mut().chain(ingress) {
        for route in &mut host.routes {
            if let PendingAction::Forward { destinations, .. } = &route.action
                && let Some(hash) = destinations
                    .iter()
                    .map(|(target, _)| &hashes[*target])
                    .find(|h| !h.is_empty())
            {
                route.policies.hash = hash.clone();
            }
        }
    }
}

/// Fields `from` sets, set on `into` (a LoadBalancerPolicy and a ConnectionPolicy combine).
fn merge(into: &mut UpstreamTraffic, from: &UpstreamTraffic) {
    macro_rules! take {
        ($($field:ident),*) => { $( if from.$field.is_some() { into.$field = from.$field.clone(); } )* };
    }
    take!(
        lb_policy,
        healthy_panic_threshold_basis_points,
        update_merge_window_ms,
        connect_timeout_ms,
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        tcp_keepalive,
        health_check,
        warmup_ms
    );
}

fn load_balancer(
    resource: &Resource,
    config: &LoadBalancerConfig,
    warnings: &mut Warnings,
) -> (UpstreamTraffic, Vec<HashKey>) {
    let key = resource.key().to_string();
    let lb_policy = match (config.simple.as_deref(), &config.consistent_hash) {
        (_, Some(_)) => Some(LbPolicy::RingHash),
        (Some("ROUND_ROBIN"), _) => Some(LbPolicy::RoundRobin),
        (Some("LEAST_REQUEST"), _) => Some(LbPolicy::LeastRequest),
        (Some("RANDOM"), _) => Some(LbPolicy::Random),
        (Some("PASSTHROUGH"), _) => {
            warnings.add(
                &key,
                "spec.config.simple: PASSTHROUGH is not applied yet (endpoints are balanced round robin)",
            );
            None
        }
        _ => None,
    };
    // Envoy's slow start exists for round robin (the default here) and least request only.
    let warms_up = matches!(lb_policy, None | Some(LbPolicy::RoundRobin | LbPolicy::LeastRequest));
    let warmup_ms = config.warmup_duration_secs.as_deref().and_then(duration_ms);
    if warmup_ms.is_some() && !warms_up {
        warnings.add(
            &key,
            "spec.config.warmupDurationSecs is not applied with RANDOM or consistentHash (only with ROUND_ROBIN and LEAST_REQUEST)",
        );
    }
    let hash = config.consistent_hash.as_ref().map(|hash| {
        if let Some(header) = &hash.http_header_name {
            HashKey::Header(header.clone())
        } else if let Some(cookie) = &hash.http_cookie {
            HashKey::Cookie {
                name: cookie["name"].as_str().unwrap_or_default().to_string(),
                path: cookie["path"].as_str().unwrap_or_default().to_string(),
                ttl_ms: cookie["ttl"].as_str().and_then(duration_ms),
            }
        } else if let Some(parameter) = &hash.http_query_parameter_name {
            HashKey::QueryParameter(parameter.clone())
        } else {
            HashKey::SourceIp
        }
    });
    let settings = UpstreamTraffic {
        lb_policy,
        healthy_panic_threshold_basis_points: config
            .healthy_panic_threshold
            .map(|percent| (percent.clamp(0.0, 100.0) * 100.0).round() as u32),
        update_merge_window_ms: config.update_merge_window.as_deref().and_then(duration_ms),
        warmup_ms: warmup_ms.filter(|_| warms_up),
        ..Default::default()
    };
    (settings, hash.into_iter().collect())
}

/// Envoy's `HealthCheck` as Gloo passes it on: the common fields and the HTTP, TCP and gRPC
/// checkers; any other field gets a WARNING.
fn health_check(
    resource: &Resource,
    config: &trellis_api::ActiveHealthCheckConfig,
    warnings: &mut Warnings,
) -> HealthCheck {
    let key = resource.key().to_string();
    if !config.virtual_gateways.is_empty() {
        warnings.add(
            &key,
            "spec.config.virtualGateways is not applied yet: every proxy that sends to the destinations checks them",
        );
    }
    let empty = serde_json::Map::new();
    let fields = config
        .health_check
        .as_ref()
        .and_then(|v| v.as_object())
        .unwrap_or(&empty);
    let ms = |name: &str, default: u64| {
        fields
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(duration_ms)
            .unwrap_or(default)
    };
    let count = |name: &str, default: u32| {
        fields
            .get(name)
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(default)
    };
    const KNOWN: [&str; 9] = [
        "timeout",
        "interval",
        "unhealthyThreshold",
        "healthyThreshold",
        "noTrafficInterval",
        "httpHealthCheck",
        "tcpHealthCheck",
        "grpcHealthCheck",
        "reuseConnection",
    ];
    for name in fields.keys().filter(|name| !KNOWN.contains(&name.as_str())) {
        warnings.add(&key, format!("spec.config.healthCheck.{name} is not applied yet"));
    }
    let probe = if let Some(http) = fields.get("httpHealthCheck") {
        let text = |name: &str| http.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let expected_statuses = http
            .get("expectedStatuses")
            .and_then(|v| v.as_array())
            .map(|ranges| {
                ranges
                    .iter()
                    .filter_map(|r| {
                        let bound =
                            |name: &str| r.get(name).and_then(|v| v.as_u64()).and_then(|n| u32::try_from(n).ok());
                        Some((bound("start")?, bound("end")?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        HealthProbe::Http {
            path: Some(text("path"))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_string()),
            host: text("host"),
            expected_statuses,
        }
    } else if fields.contains_key("grpcHealthCheck") {
        // Envoy checks gRPC only over HTTP/2, which mesh upstreams do not speak to sidecars.
        warnings.add(
            &key,
            "spec.config.healthCheck.grpcHealthCheck is not applied yet: connections are checked instead",
        );
        HealthProbe::Tcp
    } else {
        if !fields.contains_key("tcpHealthCheck") {
            warnings.add(
                &key,
                "spec.config.healthCheck has no httpHealthCheck, grpcHealthCheck or tcpHealthCheck: connections are checked",
            );
        }
        HealthProbe::Tcp
    };
    HealthCheck {
        timeout_ms: ms("timeout", 1_000),
        interval_ms: ms("interval", 10_000),
        unhealthy_threshold: count("unhealthyThreshold", 2),
        healthy_threshold: count("healthyThreshold", 1),
        no_traffic_interval_ms: fields
            .get("noTrafficInterval")
            .and_then(|v| v.as_str())
            .and_then(duration_ms),
        probe,
    }
}

fn connection(resource: &Resource, config: &ConnectionConfig, warnings: &mut Warnings) -> UpstreamTraffic {
    let key = resource.key().to_string();
    let count = |value: Option<i32>| value.and_then(|v| u32::try_from(v).ok());
    let seconds = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| parse_duration(t).ok())
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
    };
    let mut settings = UpstreamTraffic::default();
    if let Some(tcp) = &config.tcp {
        settings.max_connections = count(tcp.max_connections);
        settings.connect_timeout_ms = tcp.connect_timeout.as_deref().and_then(duration_ms);
        settings.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
            probes: k.probes,
            time_s: seconds(&k.time),
            interval_s: seconds(&k.interval),
        });
    }
    if let Some(http) = &config.http {
        settings.max_requests = count(http.max_requests);
        settings.max_pending_requests = count(http.max_pending_requests);
        settings.max_retries = count(http.max_retries);
        for (field, given) in [
            ("maxRequestsPerConnection", http.max_requests_per_connection.is_some()),
            ("idleTimeout", http.idle_timeout.is_some()),
        ] {
            if given {
                warnings.add(&key, format!("spec.config.http.{field} is not applied yet"));
            }
        }
    }
    settings
}
