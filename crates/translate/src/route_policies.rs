//! Route-level policies: RetryTimeoutPolicy, FaultInjectionPolicy and HeaderManipulationPolicy,
//! selected by `applyToRoutes` (labels of RouteTable `http[]` entries, and the table's namespace).
//! Once Workspaces exist a policy reaches only the routes of tables available in its workspace
//! (its own and those shared with it), as Gloo documents: one team's policy cannot claim
//! another team's routes.
//!
//! Conflicts: one RetryTimeoutPolicy and one FaultInjectionPolicy per route. Policies are visited
//! oldest first, so on a route the oldest wins and the later ones lose there (their status says
//! where). HeaderManipulationPolicies combine, oldest first.

use trellis_api::{HeaderManipulationConfig, Resource, RouteSelector, Spec};
use trellis_base::duration_ms;
use trellis_model::Snapshot;
use trellis_model::policy::{Fault, FaultAbort, FaultDelay, HeaderValue, Retry};

use crate::outbound::{Outbound, PendingRoute};
use crate::report::Report;
use crate::workspaces::Workspaces;

/// True when a route-table route is selected. An empty selector list selects every route-table
/// route; a VirtualDestination's default route is never selected (it has no labels to match).
pub(crate) fn selects(selectors: &[RouteSelector], route: &PendingRoute) -> bool {
    let Some(origin) = &route.table else { return false };
    if selectors.is_empty() {
        return true;
    }
    selectors.iter().any(|selector| match &selector.route {
        Some(s) => {
            s.labels.iter().all(|(k, v)| origin.labels.get(k) == Some(v))
                && (s.namespace.is_empty() || s.namespace == origin.namespace)
        }
        None => false,
    })
}

/// The `applyToRoutes` of every route-level policy: the incremental path leaves a route any of
/// them selects to full translation.
pub(crate) fn selectors(snapshot: &Snapshot) -> Vec<&[RouteSelector]> {
    snapshot
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::RetryTimeoutPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::FaultInjectionPolicy(spec) => Some(&spec.apply_to_routes[..]),
            Spec::HeaderManipulationPolicy(spec) => Some(&spec.apply_to_routes[..]),
            _ => None,
        })
        .chain(crate::traffic_policies::selectors(snapshot))
        .collect()
}

fn per_million(percentage: Option<f64>) -> u32 {
    (percentage.unwrap_or(100.0) * 10_000.0).round() as u32
}

fn headers(config: &HeaderManipulationConfig, request: bool) -> (Vec<HeaderValue>, Vec<String>) {
    let (add, remove) = if request {
        (&config.append_request_headers, &config.remove_request_headers)
    } else {
        (&config.append_response_headers, &config.remove_response_headers)
    };
    let add = add
        .iter()
        .map(|(name, value)| HeaderValue {
            name: name.clone(),
            value: value.clone(),
            append: true,
        })
        .collect();
    (add, remove.clone())
}

pub(crate) fn apply(snapshot: &Snapshot, workspaces: &Workspaces, outbound: &mut Outbound, report: &mut Report) {
    for resource in &snapshot.resources {
        let in_scope = RouteScope::of(snapshot, workspaces, resource);
        match &resource.spec {
            Spec::RetryTimeoutPolicy(spec) => {
                let retry = spec.config.retries.as_ref().map(|r| Retry {
                    attempts: r.attempts,
                    per_try_timeout_ms: r.per_try_timeout.as_deref().and_then(duration_ms),
                    retry_on: if r.retry_on.is_empty() {
                        "5xx,connect-failure,reset".into()
                    } else {
                        r.retry_on.join(",")
                    },
                });
                let timeout = spec.config.request_timeout.as_deref().and_then(duration_ms);
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.retry.is_some() || route.policies.timeout_ms.is_some() {
                        return false;
                    }
                    route.policies.retry = retry.clone();
                    route.policies.timeout_ms = timeout;
                    true
                });
            }
            Spec::FaultInjectionPolicy(spec) => {
                let fault = Fault {
                    delay: spec.config.delay.as_ref().map(|d| FaultDelay {
                        fixed_delay_ms: duration_ms(&d.fixed_delay).unwrap_or(0),
                        per_million: per_million(d.percentage),
                    }),
                    abort: spec.config.abort.as_ref().map(|a| FaultAbort {
                        http_status: a.http_status,
                        per_million: per_million(a.percentage),
                    }),
                };
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    if route.policies.fault.is_some() {
                        return false;
                    }
                    route.policies.fault = Some(fault.clone());
                    true
                });
            }
            Spec::HeaderManipulationPolicy(spec) => {
                for_each_route(outbound, &spec.apply_to_routes, &in_scope, resource, report, |route| {
                    for (request, target) in [
                        (true, &mut route.policies.request_headers),
                        (false, &mut route.policies.response_headers),
                    ] {
                        let (add, remove) = headers(&spec.config, request);
                        target.add.extend(add);
                        target.remove.extend(remove);
                    }
                    true
                });
            }
            _ => {}
        }
    }
}

/// Runs `apply` on every selected route (mesh and ingress); `apply` returns false when an older
/// policy holds it.
pub(crate) fn for_each_route(
    outbound: &mut Outbound,
    selectors: &[RouteSelector],
    in_scope: &RouteScope<'_>,
    resource: &Resource,
    report: &mut Report,
    mut apply: impl FnMut(&mut PendingRoute) -> bool,
) {
    let entry = report.entry(&resource.key().to_string());
    let ingress = outbound.ingress.iter_mut().map(|(_, host)| host);
    for host in outbound.virtual_hosts.iter_mut().chain(ingress) {
        for route in &mut host.routes {
            if !selects(selectors, route) || !in_scope.reaches(route) {
                continue;
            }
            if apply(route) {
                entry.applied += 1;
            } else {
                entry.lost.push(format!("route {} of {}", route.name, host.name));
            }
        }
    }
}

/// The routes a policy may reach: those of tables available in its workspace.
pub(crate) struct RouteScope<'a> {
    snapshot: &'a Snapshot,
    workspaces: &'a Workspaces,
    scope: crate::workspaces::PolicyScope<'a>,
}

impl<'a> RouteScope<'a> {
    pub(crate) fn of(snapshot: &'a Snapshot, workspaces: &'a Workspaces, policy: &Resource) -> Self {
        RouteScope {
            snapshot,
            workspaces,
            scope: workspaces.scope_of_policy(snapshot, &policy.metadata.namespace),
        }
    }

    pub(crate) fn reaches(&self, route: &PendingRoute) -> bool {
        route.table.as_ref().is_some_and(|origin| {
            self.workspaces
                .available(self.snapshot, self.scope, &origin.namespace, Some(&origin.shared()))
        })
    }
}
