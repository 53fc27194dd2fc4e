//! The newer Gloo route policies: CORSPolicy, CSRFPolicy, HTTPBufferPolicy, MirrorPolicy,
//! TransformationPolicy and JWTPolicy on the routes their `applyToRoutes` selects (destination-level ones are in
//! `traffic_destinations`); and a WARNING on every kind Trellis loads but does not apply yet,
//! and on every field of an applied kind that it leaves out, so nobody mistakes either for
//! working.
//!
//! Conflicts: one policy of each kind per route or destination. Policies are visited oldest first, so the
//! oldest wins and the later ones lose there (their status says where).

use trellis_api::{
    CorsConfig, DestinationKind, JwtPolicySpec, Kind, MirrorPolicySpec, Resource, RouteSelector, Spec,
    StringMatch as ApiStringMatch,
};
use trellis_base::duration::parse_duration;
use trellis_base::duration_ms;
use trellis_model::Snapshot;
use trellis_model::ir::RouteAction;
use trellis_model::policy::{
    ClaimRule, Cors, Csrf, JwtProvider, JwtRequirement, Mirror, OriginMatch, RemoteJwks as RemoteJwksIr, StringMatch,
};

use crate::Warnings;
use crate::destination_policies::DestinationLookup;
use crate::outbound::{Outbound, PendingAction};
use crate::report::Report;
use crate::route_policies::{RouteScope, for_each_route};
use crate::service_index::ServiceIndex;
use crate::target::Target;

/// Kinds that load whole but do nothing yet, and what a user should know about each.
fn not_applied(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::ProxyProtocolPolicy => "PROXY protocol on gateway listeners",
        Kind::ClientTlsPolicy => "client TLS settings to destinations (mesh mTLS is always on)",
        Kind::DlpPolicy => "data loss prevention",
        Kind::WafPolicy => "web application firewall rules",
        Kind::GraphQlAllowedQueryPolicy | Kind::GraphQlPersistedQueryCachePolicy => "GraphQL",
        Kind::ListenerConnectionPolicy => "listener connection settings",
        Kind::TrimProxyConfigPolicy => "proxy config trimming (Workspaces already trim what a sidecar sees)",
        Kind::AdaptiveRequestConcurrencyPolicy => "adaptive concurrency",
        Kind::WasmDeploymentPolicy => "Wasm filters",
        Kind::LuaPolicy => "Lua filters",
        Kind::Dashboard => "the Gloo dashboard (Trellis serves its own UI)",
        Kind::IstioLifecycleManager | Kind::GatewayLifecycleManager | Kind::WaypointLifecycleManager => {
            "Istio installation (Trellis runs its own proxies)"
        }
        _ => return None,
    })
}

/// The `applyToRoutes` of the policies this module applies, for the incremental path; an empty
/// list (every route) for policies that reach routes through their destinations.
pub(crate) fn selectors(snapshot: &Snapshot) -> Vec<&[RouteSelector]> {
    snapshot
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::CorsPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::MirrorPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::CsrfPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::HttpBufferPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::TransformationPolicy(spec) => Some(&spec.apply_to_routes[..]),
            // Selecting by destination can reach any route: an empty selector list says so.
            Spec::JwtPolicy(spec) if !spec.apply_to_destinations.is_empty() => Some(&[][..]),
            // A consistent hash is set on every route to the destination.
            Spec::LoadBalancerPolicy(spec) if spec.config.consistent_hash.is_some() => Some(&[][..]),
            Spec::JwtPolicy(spec) => Some(&spec.apply_to_routes[..]),
            _ => None,
        })
        .collect()
}

pub(crate) fn apply(
    lookup: &DestinationLookup<'_>,
    services: &ServiceIndex,
    outbound: &mut Outbound,
    report: &mut Report,
    warnings: &mut Warnings,
) {
    let snapshot = lookup.snapshot;
    for resource in &snapshot.resources {
        let key = resource.key().to_string();
        let in_scope = RouteScope::of(snapshot, lookup.workspaces, resource);
        if let Some(what) = not_applied(resource.kind()) {
            warnings.add(
                &key,
                format!("{} is accepted but not applied yet: no {what}", resource.kind()),
            );
            continue;
        }
        match &resource.spec {
            Spec::CorsPolicy(spec) => {
                let cors = cors(&spec.config);
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.cors.is_some() {
                        return false;
                    }
                    route.policies.cors = Some(Box::new(cors.clone()));
                    true
                });
            }
            Spec::TransformationPolicy(spec) => {
                let Some(transformation) = crate::transformation::transformation(resource, spec, warnings) else {
                    continue;
                };
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.transformation.is_some() {
                        return false;
                    }
                    route.policies.transformation = Some(Box::new(transformation.clone()));
                    true
                });
            }
            Spec::HttpBufferPolicy(spec) => {
                let Some(limit) = spec.config.max_request_bytes else {
                    warnings.add(&key, "spec.config.maxRequestBytes is not given: nothing is buffered");
                    continue;
                };
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.buffer_max_request_bytes.is_some() {
                        return false;
                    }
                    route.policies.buffer_max_request_bytes = Some(limit);
                    true
                });
            }
            Spec::CsrfPolicy(spec) => {
                let config = &spec.config;
                let share = (config.percentage.unwrap_or(100.0) * 10_000.0).round() as u32;
                let csrf = Csrf {
                    enforce_per_million: if config.filter_enabled { share } else { 0 },
                    shadow_per_million: if config.shadow_enabled { share } else { 0 },
                    additional_origins: config.additional_origins.iter().filter_map(origin).collect(),
                };
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.csrf.is_some() {
                        return false;
                    }
                    route.policies.csrf = Some(Box::new(csrf.clone()));
                    true
                });
            }
            Spec::MirrorPolicy(spec) => {
                let Some(upstream) = mirror_upstream(resource, spec, services, outbound, warnings) else {
                    continue;
                };
                let mirror = Mirror {
                    upstream,
                    per_million: (spec.config.percentage.unwrap_or(100.0) * 10_000.0).round() as u32,
                };
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.mirror.is_some() {
                        return false;
                    }
                    route.policies.mirror = Some(Box::new(mirror.clone()));
                    true
                });
            }
            Spec::JwtPolicy(spec) => {
                let requirement = jwt(resource, spec, warnings);
                // Without a provider Trellis can use, no token can be checked: refuse every
                // request rather than let them through unchecked.
                let unusable = requirement.providers.is_empty() && !requirement.allow_missing;
                if unusable {
                    warnings.add(
                        resource.key().to_string(),
                        "no provider Trellis can use: the selected routes answer 401 to every request",
                    );
                }
                let Outbound {
                    virtual_hosts,
                    ingress,
                    targets,
                    ..
                } = outbound;
                let entry = report.entry(&resource.key().to_string());
                let ingress = ingress.iter_mut().map(|(_, host)| host);
                for host in virtual_hosts.iter_mut().chain(ingress) {
                    for route in &mut host.routes {
                        // By route labels, or by a destination the route forwards to (checked on
                        // the caller's side, where the route is served); with neither, every
                        // route; with destinations only, only theirs.
                        let selectors = (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]);
                        let by_route = spec.apply_to_destinations.is_empty() && !in_scope.reaches(route);
                        let namespace = &resource.metadata.namespace;
                        if by_route || !crate::addons::selects(selectors, route, targets, lookup, namespace) {
                            continue;
                        }
                        if route.policies.jwt.is_some() {
                            entry.lost.push(format!("route {} of {}", route.name, host.name));
                            continue;
                        }
                        entry.applied += 1;
                        if unusable {
                            route.action = PendingAction::Fixed(RouteAction::DirectResponse {
                                status: 401,
                                body: "trellis: no usable JWT provider for this route\n".to_string(),
                            });
                        } else {
                            route.policies.jwt = Some(Box::new(requirement.clone()));
                        }
                    }
                }
            }
            // Applied by the management server, which hides the disabled insights; translation
            // only says which entries name no Trellis insight.
            Spec::InsightsConfig(spec) => {
                for (i, code) in spec.disabled_insights.iter().enumerate() {
                    if trellis_insights::code_info(code).is_none() {
                        warnings.add(
                            &key,
                            format!(
                                "spec.disabledInsights[{i}]: {code} is not a Trellis insight code (TRL0001...; see docs/insights.md), so it disables nothing"
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

fn origin(matcher: &ApiStringMatch) -> Option<OriginMatch> {
    let m = match (&matcher.exact, &matcher.prefix, &matcher.suffix, &matcher.regex) {
        (Some(text), ..) => StringMatch::Exact(text.clone()),
        (_, Some(text), ..) => StringMatch::Prefix(text.clone()),
        (_, _, Some(text), _) => StringMatch::Suffix(text.clone()),
        (.., Some(text)) => StringMatch::Regex(text.clone()),
        _ => return None,
    };
    Some(OriginMatch {
        matcher: m,
        ignore_case: matcher.ignore_case,
    })
}

fn cors(config: &CorsConfig) -> Cors {
    Cors {
        allow_origins: config.allow_origins.iter().filter_map(origin).collect(),
        allow_methods: config.allow_methods.join(","),
        allow_headers: config.allow_headers.join(","),
        expose_headers: config.expose_headers.join(","),
        max_age_seconds: config
            .max_age
            .as_deref()
            .and_then(|text| parse_duration(text).ok())
            .map(|d| d.as_secs()),
        allow_credentials: config.allow_credentials,
    }
}

/// `http(s)://host[:port]/path` as the proxy fetches it; `None` for anything else.
fn remote_jwks(remote: &trellis_api::RemoteJwks) -> Option<RemoteJwksIr> {
    let (tls, rest) = if let Some(rest) = remote.url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, remote.url.strip_prefix("http://")?)
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        // Not the colons of a bracketed IPv6 address without a port.
        Some((host, port)) if !authority.ends_with(']') => (host, port.parse().ok()?),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(RemoteJwksIr {
        url: remote.url.clone(),
        host: host.to_string(),
        port,
        tls,
        cache_duration_ms: remote.cache_duration.as_deref().and_then(duration_ms),
        timeout_ms: remote.timeout.as_deref().and_then(duration_ms),
        async_fetch: remote.enable_async_fetch,
    })
}

/// The upstream copies go to: the destination's target, added when no route uses it yet.
fn mirror_upstream(
    resource: &Resource,
    spec: &MirrorPolicySpec,
    services: &ServiceIndex,
    outbound: &mut Outbound,
    warnings: &mut Warnings,
) -> Option<String> {
    let key = resource.key().to_string();
    let Some(destination) = spec
        .config
        .destination
        .as_ref()
        .filter(|d| !d.reference.name.is_empty())
    else {
        warnings.add(
            &key,
            "spec.config.destination.ref.name is not given: nothing is mirrored",
        );
        return None;
    };
    let reference = &destination.reference;
    let namespace = if reference.namespace.is_empty() {
        resource.metadata.namespace.as_str()
    } else {
        reference.namespace.as_str()
    };
    let number = destination.port.as_ref().and_then(|p| p.number);
    let port_name = destination.port.as_ref().and_then(|p| p.name.as_deref());
    match destination.kind {
        DestinationKind::VirtualDestination => {
            let found = outbound.targets.iter().find(|t| {
                t.virtual_destination
                    .as_ref()
                    .is_some_and(|vd| vd.namespace == namespace && vd.name == reference.name)
                    && t.subset == destination.subset
                    && number.is_none_or(|n| u32::from(t.port) == n)
            });
            if found.is_none() {
                warnings.add(
                    &key,
                    format!(
                        "spec.config.destination: VirtualDestination {namespace}/{} (port {}) not found; nothing is mirrored",
                        reference.name,
                        number.map_or("any".to_string(), |n| n.to_string())
                    ),
                );
            }
            found.map(Target::upstream_name)
        }
        DestinationKind::Service => {
            let backends = services.backends(namespace, &reference.name, &reference.cluster, number, port_name);
            let Some(port) = backends.first().map(|b| b.port) else {
                warnings.add(
                    &key,
                    format!(
                        "spec.config.destination: service {namespace}/{} has no such port, or is not discovered yet; nothing is mirrored",
                        reference.name
                    ),
                );
                return None;
            };
            let scope = if reference.cluster.is_empty() {
                "mesh"
            } else {
                reference.cluster.as_str()
            };
            let mut backends = backends;
            backends.sort();
            let target = Target {
                host: format!("{}.{namespace}.svc.{scope}", reference.name),
                port,
                subset: destination.subset.clone(),
                backends,
                virtual_destination: None,
            };
            let name = target.upstream_name();
            if !outbound.targets.contains(&target) {
                outbound.targets.push(target);
            }
            Some(name)
        }
        DestinationKind::ExternalService => {
            warnings.add(
                &key,
                "spec.config.destination: EXTERNAL_SERVICE mirrors are not supported yet; nothing is mirrored",
            );
            None
        }
    }
}

fn jwt(resource: &Resource, spec: &JwtPolicySpec, warnings: &mut Warnings) -> JwtRequirement {
    let key = resource.key().to_string();
    let config = &spec.config;
    let mut ignored = |field: &str| {
        warnings.add(&key, format!("{field} is not applied yet"));
    };
    if config.phase.is_some() {
        ignored("spec.config.phase");
    }
    if config.clear_route_cache.is_some() {
        ignored("spec.config.clearRouteCache");
    }
    let policy = format!("{}/{}", resource.metadata.namespace, resource.metadata.name);
    let mut providers = Vec::new();
    for (name, provider) in &config.providers {
        let base = format!("spec.config.providers.{name}");
        let (local_jwks, remote) = match (&provider.local, &provider.remote) {
            (Some(local), _) if local.inline.is_some() => {
                let inline = local.inline.clone().unwrap_or_default();
                // Envoy reads a key set only; a PEM key becomes one (apply checked it parses).
                match trellis_api::is_pem(&inline) {
                    true => match trellis_api::pem_to_jwks(&inline) {
                        Ok(jwks) => (jwks, None),
                        Err(e) => {
                            ignored(&format!("{base}.local.inline ({e}); this provider"));
                            continue;
                        }
                    },
                    false => (inline, None),
                }
            }
            (Some(_), _) => {
                ignored(&format!(
                    "{base}.local.secretRef (give the key set inline); this provider"
                ));
                continue;
            }
            (None, Some(remote)) => {
                if remote.destination_ref.is_some() {
                    ignored(&format!(
                        "{base}.remote.destinationRef (the key set is fetched from remote.url)"
                    ));
                }
                let Some(fetched) = remote_jwks(remote) else {
                    ignored(&format!("{base}.remote.url {:?}; this provider", remote.url));
                    continue;
                };
                (String::new(), Some(fetched))
            }
            (None, None) => {
                ignored(&format!("{base} has no key set (local or remote); this provider"));
                continue;
            }
        };
        let source = provider.token_source.clone().unwrap_or_default();
        providers.push(JwtProvider {
            name: format!("{policy}/{name}"),
            issuer: provider.issuer.clone(),
            audiences: provider.audiences.clone(),
            local_jwks,
            remote,
            from_headers: source
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.prefix.clone()))
                .collect(),
            from_params: source.query_params.clone(),
            claims_to_headers: provider
                .claims_to_headers
                .iter()
                .map(|c| (c.claim.clone(), c.header.clone()))
                .collect(),
            forward: provider.keep_token,
            clock_skew_seconds: provider.clock_skew_seconds,
            payload_header: provider.output_payload_to_header.clone(),
        });
    }
    let validation = match (config.validation_policy.as_deref(), config.allow_missing_or_failed) {
        (Some(policy), _) => policy,
        (None, true) => "ALLOW_MISSING_OR_FAILED",
        (None, false) => "REQUIRE_VALID",
    };
    JwtRequirement {
        name: policy,
        providers,
        allow_missing: validation != "REQUIRE_VALID",
        allow_failed: validation == "ALLOW_MISSING_OR_FAILED",
        claims: config
            .claims
            .iter()
            .map(|claim| ClaimRule {
                path: if claim.nested_claim_delimiter.is_empty() {
                    vec![claim.key.clone()]
                } else {
                    claim
                        .key
                        .split(claim.nested_claim_delimiter.as_str())
                        .map(str::to_string)
                        .collect()
                },
                values: claim.values.clone(),
                not_values: claim.not_values.clone(),
            })
            .collect(),
        required_scopes: config.required_scopes.clone(),
    }
}

#[cfg(test)]
mod tests;
