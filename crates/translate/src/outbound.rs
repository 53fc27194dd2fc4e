//! VirtualDestinations and RouteTables ─▶ outbound virtual hosts and the Targets they use.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use trellis_api::{
    DestinationKind, DestinationReference, HttpRoute, RequestMatcher, Resource, RouteTableSpec, VirtualDestinationSpec,
};
use trellis_model::Snapshot;
use trellis_model::ir::{
    ClientSelector, Forward, HeaderMatch, PathMatch, QueryParamMatch, Route, RouteAction, RouteMatch, ValueMatch,
    VirtualHost,
};
use trellis_model::snapshot::Service;

use crate::Warnings;
use crate::service_index::ServiceIndex;
use crate::target::{Backend, Target, VdRef};

/// Outbound routing for every cluster; targets are referenced from routes by index.
pub(crate) struct Outbound {
    pub virtual_hosts: Vec<OutboundHost>,
    pub targets: Vec<Target>,
    /// Virtual hosts bound to VirtualGateways (`namespace/name`) by RouteTables, oldest first.
    pub ingress: Vec<(String, OutboundHost)>,
    /// Every target lookup in order, repeats included: equal sequences intern equal targets in
    /// the same order (what the incremental path checks before it reuses the targets).
    pub encounters: Vec<usize>,
    /// A partial build met a VirtualDestination port whose backends it was not given.
    pub unknown_backends: bool,
}

impl Outbound {
    /// For each target, the one cluster that needs it when only that cluster's own hosts (its
    /// services' Kubernetes-style names) route to it; `None` when any other host, gateway's
    /// included, does. Other clusters then carry no upstream for it. Whatever else comes to
    /// reference targets must be counted here.
    pub(crate) fn cluster_local_targets(&self) -> Vec<Option<&str>> {
        let mut local: Vec<Option<Option<&str>>> = vec![None; self.targets.len()];
        let hosts = self
            .virtual_hosts
            .iter()
            .map(|h| (h.cluster.as_deref(), h))
            .chain(self.ingress.iter().map(|(_, h)| (None, h)));
        for (cluster, host) in hosts {
            for route in &host.routes {
                let PendingAction::Forward { destinations, .. } = &route.action else {
                    continue;
                };
                for (target, _) in destinations {
                    let seen = &mut local[*target];
                    *seen = match (*seen, cluster) {
                        (None, cluster) => Some(cluster),
                        (Some(before), cluster) if before == cluster => Some(cluster),
                        _ => Some(None),
                    };
                }
            }
        }
        // A mirror copies requests to its target from wherever its route is served.
        let ingress = self.ingress.iter().map(|(_, h)| h);
        let mirrored: BTreeSet<&str> = self
            .virtual_hosts
            .iter()
            .chain(ingress)
            .flat_map(|h| &h.routes)
            .filter_map(|r| r.policies.mirror.as_deref())
            .map(|m| m.upstream.as_str())
            .collect();
        if !mirrored.is_empty() {
            for (target, seen) in self.targets.iter().zip(&mut local) {
                if mirrored.contains(target.upstream_name().as_str()) {
                    *seen = Some(None);
                }
            }
        }
        local.into_iter().map(Option::flatten).collect()
    }
}

/// The backends of a VirtualDestination port by (namespace, name, host, port), if known.
pub(crate) type KnownBackends<'p> = &'p dyn Fn(&str, &str, &str, u16) -> Option<Vec<Backend>>;

/// What a partial build covers (see `build_part`).
pub(crate) struct Part<'p> {
    /// The host names whose virtual hosts to build.
    pub hosts: &'p BTreeSet<String>,
    /// The backends of a VirtualDestination port, (namespace, name, host, port), as the last
    /// full translation resolved them: then no build needs every service indexed. `None`
    /// resolves them from the service index.
    pub known_backends: Option<KnownBackends<'p>>,
}

/// A virtual host whose forward actions still name targets, not upstreams.
#[derive(Default)]
pub(crate) struct OutboundHost {
    pub name: String,
    pub domains: Vec<String>,
    /// Who may see this host (Workspaces).
    pub workspaces: trellis_model::ir::Visibility,
    pub routes: Vec<PendingRoute>,
    /// The one cluster whose sidecars get this host (a Kubernetes-style name of one of its
    /// services); `None`: every cluster's.
    pub cluster: Option<String>,
    /// Which client workloads it overrides the default hosts for (see `ir::VirtualHost`).
    pub clients: Option<Vec<ClientSelector>>,
    /// The RouteTable (namespace, name) that bound it to a gateway: listeners admit hosts by it
    /// (`allowedRouteTables`). `None` for the mesh's own hosts.
    pub route_table: Option<(String, String)>,
}

/// A route before target indexes become upstream names, with what policies select it by.
pub(crate) struct PendingRoute {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: PendingAction,
    /// The route table it came from (`None` for a VirtualDestination's default route).
    pub table: Option<RouteOrigin>,
    pub policies: trellis_model::policy::RoutePolicies,
    /// The route's RateLimitPolicy when the destination's sidecar also counts it, for callers
    /// that arrive in plaintext (see `addons`); the route's inbound mirror carries it.
    pub destination_rate_limit: Option<trellis_model::addons::RouteRateLimit>,
}

impl PendingRoute {
    /// A catch-all route to one target: a host's implicit route.
    fn to_target(name: &str, target: usize) -> Self {
        PendingRoute {
            name: name.to_string(),
            matcher: RouteMatch::default(),
            action: PendingAction::Forward {
                destinations: vec![(target, 1)],
                path_rewrite: None,
                host_rewrite: None,
            },
            table: None,
            policies: Default::default(),
            destination_rate_limit: None,
        }
    }
}

/// Where a route-table route came from: what `applyToRoutes` selectors look at.
pub(crate) struct RouteOrigin {
    pub namespace: String,
    /// The route's labels.
    pub labels: BTreeMap<String, String>,
    /// The table's name and labels: what `importFrom` / `exportTo` `resources` look at.
    pub table_name: String,
    pub table_labels: BTreeMap<String, String>,
}

impl RouteOrigin {
    /// The table, as workspace sharing sees it.
    pub(crate) fn shared(&self) -> crate::workspaces::Shared<'_> {
        crate::workspaces::Shared {
            kind: trellis_api::SharedKind::RouteTable,
            name: &self.table_name,
            namespace: &self.namespace,
            cluster: None,
            labels: &self.table_labels,
        }
    }
}

#[derive(Clone)]
pub(crate) enum PendingAction {
    /// (target index, weight) pairs.
    Forward {
        destinations: Vec<(usize, u32)>,
        path_rewrite: Option<String>,
        host_rewrite: Option<String>,
    },
    Fixed(RouteAction),
}

struct Context<'a, 's> {
    services: &'a ServiceIndex<'a, 's>,
    /// VirtualDestinations by (namespace, name), for routes that name one.
    virtual_destinations: HashMap<(&'s str, &'s str), (&'s Resource, &'s VirtualDestinationSpec)>,
    targets: BTreeMap<Target, usize>,
    encounters: Vec<usize>,
    known_backends: Option<KnownBackends<'a>>,
    unknown_backends: bool,
    warnings: &'a mut Warnings,
    /// Every route table, for the children of delegating routes.
    delegation: &'a crate::delegation::Tables<'a>,
    /// VirtualDestinations whose east-west gateways end TLS: their own `clientMode`, or else
    /// their workspace's `virtualDestClientMode`.
    tls_terminated: HashSet<(&'s str, &'s str)>,
}

/// One port of one VirtualDestination host.
struct VdHost<'s> {
    resource: &'s Resource,
    spec: &'s VirtualDestinationSpec,
    host: &'s str,
    port: u16,
}

pub(crate) fn build<'a>(
    snapshot: &Snapshot,
    services: &'a ServiceIndex<'a, '_>,
    workspaces: &crate::workspaces::Workspaces,
    warnings: &mut Warnings,
) -> Outbound {
    build_part(snapshot, snapshot.route_tables(), None, services, workspaces, warnings)
}

/// As `build`, with the route tables given; with `part`, just the virtual hosts of its host
/// names (route tables bound to gateways left out): what a route table edit can change.
pub(crate) fn build_part<'a, 'r>(
    snapshot: &Snapshot,
    route_tables: impl Iterator<Item = (&'r Resource, &'r RouteTableSpec)>,
    part: Option<&'a Part<'a>>,
    services: &'a ServiceIndex<'a, '_>,
    workspaces: &crate::workspaces::Workspaces,
    warnings: &mut Warnings,
) -> Outbound {
    let only = part.map(|p| p.hosts);
    let wanted = |host: &str| only.is_none_or(|hosts| hosts.contains(host));
    let route_tables: Vec<(&Resource, &RouteTableSpec)> = route_tables.collect();
    // A part needs only the VirtualDestinations its route tables name, not a map of them all.
    let named: Option<BTreeSet<(&str, &str)>> = part.map(|_| {
        route_tables
            .iter()
            .flat_map(|(resource, spec)| {
                let destinations = spec
                    .http
                    .iter()
                    .flat_map(|r| &r.forward_to)
                    .flat_map(|f| &f.destinations);
                destinations.map(|d| {
                    let namespace = if d.reference.namespace.is_empty() {
                        resource.metadata.namespace.as_str()
                    } else {
                        d.reference.namespace.as_str()
                    };
                    (namespace, d.reference.name.as_str())
                })
            })
            .collect()
    });
    let delegation = crate::delegation::Tables::new(snapshot, workspaces);
    let mut cx = Context {
        services,
        virtual_destinations: snapshot
            .virtual_destinations()
            .map(|(r, spec)| ((r.metadata.namespace.as_str(), r.metadata.name.as_str()), (r, spec)))
            .filter(|(key, _)| named.as_ref().is_none_or(|named| named.contains(key)))
            .collect(),
        targets: BTreeMap::new(),
        encounters: Vec::new(),
        known_backends: part.and_then(|p| p.known_backends),
        unknown_backends: false,
        warnings,
        delegation: &delegation,
        tls_terminated: snapshot
            .virtual_destinations()
            .filter(|(r, spec)| match &spec.client_mode {
                Some(mode) => mode.get("tlsTermination").is_some(),
                None => workspaces.vd_tls_termination_by_default(snapshot, &r.metadata.namespace),
            })
            .map(|(r, _)| (r.metadata.namespace.as_str(), r.metadata.name.as_str()))
            .collect(),
    };

    // Every VirtualDestination host and port gets a virtual host with a default route to all
    // its backends; route tables for that host replace the default route.
    // By (name, cluster): a Kubernetes-style service host has one version per cluster.
    let mut hosts: BTreeMap<(String, Option<String>), OutboundHost> = BTreeMap::new();
    let mut vd_hosts: BTreeMap<&str, Vec<VdHost>> = BTreeMap::new();
    for (resource, spec) in snapshot.virtual_destinations() {
        for host in spec.hosts.iter().filter(|h| wanted(h)) {
            for port in &spec.ports {
                let Ok(port_number) = u16::try_from(port.number) else {
                    continue;
                };
                if hosts.contains_key(&(vhost_name(host, port_number), None)) {
                    cx.warnings.add(
                        resource.key().to_string(),
                        format!(
                            "host {host}:{port_number} is already served by an older VirtualDestination; ignored here"
                        ),
                    );
                    continue;
                }
                let vd = VdHost {
                    resource,
                    spec,
                    host,
                    port: port_number,
                };
                let target = cx.vd_target(&vd, &BTreeMap::new());
                let route = PendingRoute::to_target("default", target);
                hosts.insert(
                    (vhost_name(host, port_number), None),
                    OutboundHost {
                        name: vhost_name(host, port_number),
                        domains: domains(host, Some(port_number)),
                        workspaces: workspaces.visibility_of_resource(snapshot, resource),
                        routes: vec![route],
                        ..Default::default()
                    },
                );
                vd_hosts.entry(host.as_str()).or_default().push(vd);
            }
        }
    }

    // Federated host names of the services of workspaces with federation enabled. Two
    // workspaces federating one service (one imports it) share the name: who sees it adds up.
    let mut federated_names: BTreeSet<String> = BTreeSet::new();
    for federated in workspaces.federations() {
        for service in services.all() {
            let Some(visibility) = workspaces.federated_visibility(snapshot, &federated, service) else {
                continue;
            };
            let host = format!(
                "{}.{}.{}.{}",
                service.name, service.namespace, service.cluster, federated.suffix
            );
            if !wanted(&host) {
                continue;
            }
            for port in service
                .ports
                .values()
                .filter(|p| federated.federates_port(p.port, &p.name))
            {
                let name = vhost_name(&host, port.port);
                if let Some(existing) = hosts.get_mut(&(name.clone(), None)) {
                    if federated_names.contains(&name) {
                        existing.workspaces = crate::workspaces::union(existing.workspaces.take(), &visibility);
                    }
                    continue;
                }
                federated_names.insert(name.clone());
                let backend = Backend {
                    cluster: service.cluster.to_string(),
                    namespace: service.namespace.to_string(),
                    service: service.name.to_string(),
                    port: port.port,
                };
                let target = cx.intern(Target {
                    host: format!("{}.{}.svc.{}", service.name, service.namespace, service.cluster),
                    port: port.port,
                    subset: BTreeMap::new(),
                    backends: vec![backend],
                    virtual_destination: None,
                });
                let route = PendingRoute::to_target("federation", target);
                hosts.insert(
                    (name.clone(), None),
                    OutboundHost {
                        name,
                        domains: domains(&host, Some(port.port)),
                        workspaces: visibility.clone(),
                        routes: vec![route],
                        ..Default::default()
                    },
                );
            }
        }
    }

    // Kubernetes-style names of each cluster's own services, for that cluster's sidecars, as
    // a Kubernetes cluster resolves them (a VirtualDestination on the same name wins).
    for service in services.all() {
        let host = service_host(service.name, service.namespace);
        let short = format!("{}.{}", service.name, service.namespace);
        if !wanted(&host) || vd_hosts.contains_key(host.as_str()) || vd_hosts.contains_key(short.as_str()) {
            continue;
        }
        let visibility = workspaces.visibility_of_service(snapshot, service);
        for port in service.ports.values() {
            let target = cx.intern(local_service_target(
                service.cluster,
                service.namespace,
                service.name,
                port.port,
            ));
            let name = vhost_name(&host, port.port);
            hosts.insert(
                (name.clone(), Some(service.cluster.to_string())),
                OutboundHost {
                    name,
                    domains: service_domains(service.name, service.namespace, port.port),
                    workspaces: visibility.clone(),
                    routes: vec![PendingRoute::to_target("service", target)],
                    cluster: Some(service.cluster.to_string()),
                    clients: None,
                    route_table: None,
                },
            );
        }
    }

    let virtual_gateways: BTreeSet<(&str, &str)> = snapshot
        .resources
        .iter()
        .filter(|r| matches!(r.spec, trellis_api::Spec::VirtualGateway(_)))
        .map(|r| (r.metadata.namespace.as_str(), r.metadata.name.as_str()))
        .collect();
    // Route tables, oldest first; their routes are concatenated per host in that order.
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    let mut ingress: Vec<(String, OutboundHost)> = Vec::new();
    for (resource, spec) in route_tables {
        // Bound to gateways: served by those ingress gateways.
        if !spec.virtual_gateways.is_empty() {
            if only.is_some() {
                continue;
            }
            for (g, gateway) in spec.virtual_gateways.iter().enumerate() {
                let name = gateway["name"].as_str().unwrap_or_default();
                let namespace = gateway["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&resource.metadata.namespace);
                if !virtual_gateways.contains(&(namespace, name)) {
                    cx.warnings.add(
                        resource.key().to_string(),
                        format!(
                            "spec.virtualGateways[{g}]: VirtualGateway {namespace}/{name} not found; no gateway serves these routes until it exists"
                        ),
                    );
                }
                for host in &spec.hosts {
                    let routes = cx.route_table_routes(resource, spec, None);
                    ingress.push((
                        format!("{namespace}/{name}"),
                        OutboundHost {
                            name: host.clone(),
                            domains: if host == "*" {
                                vec!["*".to_string()]
                            } else {
                                domains(host, None)
                            },
                            workspaces: None,
                            routes,
                            route_table: Some((resource.metadata.namespace.clone(), resource.metadata.name.clone())),
                            ..Default::default()
                        },
                    ));
                }
            }
            // With workloadSelectors as well, the selected workloads' sidecars get the routes too.
            if spec.workload_selectors.is_empty() {
                continue;
            }
        }
        let selected = client_selectors(snapshot, resource, spec, workspaces, cx.warnings);
        for host in spec.hosts.iter().filter(|h| wanted(h)) {
            let visibility = workspaces.visibility_of_resource(snapshot, resource);
            // A host named like a discovered service: routes for its ports, overriding each
            // cluster's default for the workloads the table is for (all of its workspace's
            // when it selects none).
            let service = if vd_hosts.contains_key(host.as_str()) {
                None
            } else {
                named_service(services, host)
            };
            if let Some((name, namespace, ports)) = service {
                for port in ports {
                    let routes = cx.route_table_routes(resource, spec, Some(port));
                    let host_name = override_name(&vhost_name(&service_host(name, namespace), port), resource);
                    hosts.insert(
                        (host_name.clone(), None),
                        OutboundHost {
                            name: host_name,
                            domains: service_domains(name, namespace, port),
                            workspaces: visibility.clone(),
                            routes,
                            cluster: None,
                            clients: Some(selected.clone().unwrap_or_default()),
                            route_table: None,
                        },
                    );
                }
                continue;
            }
            let ports: Vec<Option<u16>> = match vd_hosts.get(host.as_str()) {
                Some(vds) => vds.iter().map(|vd| Some(vd.port)).collect(),
                None => vec![None],
            };
            for port in ports {
                let name = match port {
                    Some(port) => vhost_name(host, port),
                    None => host.clone(),
                };
                let routes = cx.route_table_routes(resource, spec, port);
                if let Some(selected) = &selected {
                    let host_name = override_name(&name, resource);
                    hosts.insert(
                        (host_name.clone(), None),
                        OutboundHost {
                            name: host_name,
                            domains: domains(host, port),
                            workspaces: visibility.clone(),
                            routes,
                            cluster: None,
                            clients: Some(selected.clone()),
                            route_table: None,
                        },
                    );
                    continue;
                }
                let entry = hosts.entry((name.clone(), None)).or_insert_with(|| OutboundHost {
                    name: name.clone(),
                    domains: domains(host, None),
                    workspaces: visibility.clone(),
                    ..Default::default()
                });
                if replaced.insert(name) {
                    entry.routes.clear();
                }
                entry.routes.extend(routes);
            }
        }
    }

    let mut targets: Vec<(Target, usize)> = cx.targets.into_iter().collect();
    targets.sort_by_key(|(_, index)| *index);
    Outbound {
        virtual_hosts: hosts.into_values().collect(),
        targets: targets.into_iter().map(|(t, _)| t).collect(),
        ingress,
        encounters: cx.encounters,
        unknown_backends: cx.unknown_backends,
    }
}

fn vhost_name(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// The Kubernetes-style full name of a service.
fn service_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// What clients send for a service port: the full name and `<name>.<namespace>`, with the port
/// (and without it for port 80).
fn service_domains(name: &str, namespace: &str, port: u16) -> Vec<String> {
    let mut list = domains(&service_host(name, namespace), Some(port));
    list.extend(domains(&format!("{name}.{namespace}"), Some(port)));
    list
}

/// True when `host` may be a Kubernetes-style service name (`<svc>.<ns>.svc.cluster.local` or
/// `<svc>.<ns>`): what a partial build cannot resolve without every service.
pub(crate) fn may_name_service(host: &str) -> bool {
    host.ends_with(".svc.cluster.local") || host.matches('.').count() == 1
}

/// The discovered service (name, namespace, ports of it in any cluster) a route table host
/// names the Kubernetes way, if any.
fn named_service<'s>(services: &ServiceIndex<'_, 's>, host: &str) -> Option<(&'s str, &'s str, BTreeSet<u16>)> {
    let short = host.strip_suffix(".svc.cluster.local").unwrap_or(host);
    let (name, namespace) = short.split_once('.')?;
    if namespace.contains('.') {
        return None;
    }
    let mut found = None;
    let mut ports = BTreeSet::new();
    for service in services.named(namespace, name, "") {
        found = Some((service.name, service.namespace));
        ports.extend(service.ports.keys().copied());
    }
    found.map(|(name, namespace)| (name, namespace, ports))
}

/// The one service port of one cluster: what a Kubernetes-style name reaches by default.
fn local_service_target(cluster: &str, namespace: &str, name: &str, port: u16) -> Target {
    Target {
        host: format!("{name}.{namespace}.svc.{cluster}"),
        port,
        subset: BTreeMap::new(),
        backends: vec![Backend {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            service: name.to_string(),
            port,
        }],
        virtual_destination: None,
    }
}

/// True when `target` is what a cluster's own service name routes to by default: only that
/// cluster carries it, unless some mesh-wide route sends there too.
pub(crate) fn is_local_service_target(target: &Target) -> bool {
    match target.backends.as_slice() {
        [b] => *target == local_service_target(&b.cluster, &b.namespace, &b.service, b.port),
        _ => false,
    }
}

/// An overriding host's name: sorted after the host it overrides, and among the route tables
/// overriding it, oldest first (their routes are concatenated in that order where several apply).
fn override_name(host: &str, table: &Resource) -> String {
    format!(
        "{host}@{:020}/{}/{}",
        table.metadata.creation_revision, table.metadata.namespace, table.metadata.name
    )
}

/// A route table's `workloadSelectors` as client selectors; `None` when it has none (then it
/// applies to every sidecar of its workspace). As Gloo's ObjectSelector says, an unset namespace,
/// cluster or workspace matches all those available to the table's workspace: here, whoever
/// may see the table's host (ObjectSelector in https://github.com/solo-io/solo-apis, common v2).
fn client_selectors(
    snapshot: &Snapshot,
    resource: &Resource,
    spec: &RouteTableSpec,
    workspaces: &crate::workspaces::Workspaces,
    warnings: &mut Warnings,
) -> Option<Vec<ClientSelector>> {
    if spec.workload_selectors.is_empty() {
        return None;
    }
    let text = |value: &serde_json::Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let mut selectors = Vec::new();
    for (i, entry) in spec.workload_selectors.iter().enumerate() {
        let selector = &entry["selector"];
        let labels: Result<BTreeMap<String, String>, _> = match &selector["labels"] {
            serde_json::Value::Null => Ok(BTreeMap::new()),
            labels => serde_json::from_value(labels.clone()),
        };
        let Ok(labels) = labels else {
            warnings.add(
                resource.key().to_string(),
                format!("spec.workloadSelectors[{i}].selector.labels: not a map of strings; this selector selects no workload"),
            );
            continue;
        };
        if !entry["port"].is_null() {
            warnings.add(
                resource.key().to_string(),
                format!("spec.workloadSelectors[{i}].port: not applied; the routes apply to every port of the selected workloads"),
            );
        }
        selectors.push(ClientSelector {
            labels,
            namespace: text(&selector["namespace"]),
            cluster: text(&selector["cluster"]),
            workspace: text(&selector["workspace"]).filter(|_| workspaces.defined()),
        });
    }
    if selectors.is_empty() {
        // Every selector was unreadable: select nothing rather than everyone.
        selectors.push(ClientSelector {
            namespace: Some(String::new()),
            ..Default::default()
        });
    } else if !selects_any_workload(snapshot, workspaces, &selectors) {
        warnings.add(
            resource.key().to_string(),
            "spec.workloadSelectors selects no workload yet; no sidecar gets these routes",
        );
    }
    Some(selectors)
}

/// True when some discovered workload is a client `selectors` select.
fn selects_any_workload(
    snapshot: &Snapshot,
    workspaces: &crate::workspaces::Workspaces,
    selectors: &[ClientSelector],
) -> bool {
    snapshot.discovery.iter().any(|(cluster, discovery)| {
        discovery.workloads.iter().any(|workload| {
            let client = trellis_model::ir::Client {
                cluster,
                namespace: &workload.namespace,
                labels: &workload.labels,
                workspace: workspaces.of(snapshot, cluster, &workload.namespace),
            };
            selectors.iter().any(|s| s.selects(&client))
        })
    })
}

/// Clients send `Host: name` for port 80 and `Host: name:port` otherwise.
fn domains(host: &str, port: Option<u16>) -> Vec<String> {
    match port {
        Some(80) => vec![host.to_string(), format!("{host}:80")],
        Some(port) => vec![format!("{host}:{port}")],
        None => vec![host.to_string(), format!("{host}:*")],
    }
}

impl<'s> Context<'_, 's> {
    fn intern(&mut self, target: Target) -> usize {
        let next = self.targets.len();
        let index = *self.targets.entry(target).or_insert(next);
        self.encounters.push(index);
        index
    }

    /// The services a VirtualDestination selects, with the service port its port maps to.
    fn vd_backends(&mut self, vd: &VdHost) -> Vec<Backend> {
        if let Some(known) = self.known_backends {
            let (namespace, name) = (&vd.resource.metadata.namespace, &vd.resource.metadata.name);
            return known(namespace, name, vd.host, vd.port).unwrap_or_else(|| {
                self.unknown_backends = true;
                Vec::new()
            });
        }
        let vd_port = vd.spec.ports.iter().find(|p| p.number == u32::from(vd.port));
        let (number, name) = match vd_port.and_then(|p| p.target_port.as_ref()) {
            Some(target) => (target.number, target.name.clone()),
            None => (Some(u32::from(vd.port)), None),
        };
        // Each selected service once, in (cluster, namespace, name) order.
        let selected: BTreeMap<(&str, &str, &str), &Service> = vd
            .spec
            .services
            .iter()
            .flat_map(|selector| self.services.selected(selector))
            .map(|s| ((s.cluster, s.namespace, s.name), s))
            .collect();
        let mut backends = Vec::new();
        for service in selected.into_values() {
            match service.port_by_number_or_name(number, name.as_deref()) {
                Some(port) => backends.push(Backend {
                    cluster: service.cluster.to_string(),
                    namespace: service.namespace.to_string(),
                    service: service.name.to_string(),
                    port: port.port,
                }),
                None => self.warnings.add(
                    vd.resource.key().to_string(),
                    format!(
                        "service {}/{} in cluster {} has no port {}",
                        service.namespace,
                        service.name,
                        service.cluster,
                        port_label(number, name.as_deref())
                    ),
                ),
            }
        }
        if backends.is_empty() && !vd.spec.services.is_empty() {
            self.warnings
                .add(vd.resource.key().to_string(), "no backing service found yet");
        }
        backends
    }

    fn vd_target(&mut self, vd: &VdHost, subset: &BTreeMap<String, String>) -> usize {
        let backends = self.vd_backends(vd);
        self.intern(Target {
            host: vd.host.to_string(),
            port: vd.port,
            subset: subset.clone(),
            backends,
            virtual_destination: Some(VdRef {
                namespace: vd.resource.metadata.namespace.clone(),
                name: vd.resource.metadata.name.clone(),
                labels: vd.resource.metadata.labels.clone(),
                tls_termination: self.tls_terminated.contains(&(
                    vd.resource.metadata.namespace.as_str(),
                    vd.resource.metadata.name.as_str(),
                )),
            }),
        })
    }

    /// The routes of one table, delegation resolved (see `delegation`): each delegated route is
    /// translated as a route of the child table that defines it.
    fn route_table_routes(
        &mut self,
        resource: &Resource,
        spec: &RouteTableSpec,
        port: Option<u16>,
    ) -> Vec<PendingRoute> {
        let mut routes = Vec::new();
        for route in self.delegation.flatten(resource, spec, self.warnings) {
            let namespace = &route.table.metadata.namespace;
            let action = match &route.replaced {
                Some(problem) => replacement(problem),
                None => {
                    let default = route.spec.default_destination.as_ref();
                    self.route_action(&route.table_key, namespace, route.route, default, port, route.index)
                }
            };
            let matchers: Vec<RouteMatch> = if route.matchers.is_empty() {
                vec![RouteMatch::default()]
            } else {
                route.matchers.iter().map(route_match).collect()
            };
            let count = matchers.len();
            for (m, matcher) in matchers.into_iter().enumerate() {
                let route_name = if count == 1 {
                    route.name.clone()
                } else {
                    format!("{}/{m}", route.name)
                };
                routes.push(PendingRoute {
                    name: route_name,
                    matcher,
                    action: action.clone(),
                    table: Some(RouteOrigin {
                        namespace: namespace.clone(),
                        labels: route.labels.clone(),
                        table_name: route.table.metadata.name.clone(),
                        table_labels: route.table.metadata.labels.clone(),
                    }),
                    policies: Default::default(),
                    destination_rate_limit: None,
                });
            }
        }
        routes.extend(self.default_destination_route(resource, spec, port));
        routes
    }

    /// Gloo's route table reference: requests that match none of a table's routes go to its
    /// `defaultDestination` ("All other HTTP traffic is sent to the default destination",
    /// https://docs.solo.io/gloo-mesh-enterprise/main/reference/api/route_table/): a catch-all
    /// after the table's own routes. Only for a table serving hosts; a delegated child's default
    /// serves its routes that name no destination (see `route_action`).
    fn default_destination_route(
        &mut self,
        resource: &Resource,
        spec: &RouteTableSpec,
        port: Option<u16>,
    ) -> Option<PendingRoute> {
        let default = spec.default_destination.as_ref()?;
        if spec.hosts.is_empty() {
            return None;
        }
        let key = resource.key().to_string();
        let namespace = &resource.metadata.namespace;
        let action = match self.destination_target(namespace, default, port) {
            Ok(target) => PendingAction::Forward {
                destinations: vec![(target, 1)],
                path_rewrite: None,
                host_rewrite: None,
            },
            Err(problem) => {
                self.warnings.add(
                    key,
                    format!("spec.defaultDestination: {problem}; requests no route matches answer 500"),
                );
                replacement(&problem)
            }
        };
        Some(PendingRoute {
            name: format!("{namespace}/{}/defaultDestination", resource.metadata.name),
            matcher: RouteMatch::default(),
            action,
            table: Some(RouteOrigin {
                namespace: namespace.clone(),
                labels: Default::default(),
                table_name: resource.metadata.name.clone(),
                table_labels: resource.metadata.labels.clone(),
            }),
            policies: Default::default(),
            destination_rate_limit: None,
        })
    }

    fn route_action(
        &mut self,
        table: &str,
        namespace: &str,
        route: &HttpRoute,
        default_destination: Option<&DestinationReference>,
        port: Option<u16>,
        index: usize,
    ) -> PendingAction {
        if let Some(direct) = &route.direct_response {
            return PendingAction::Fixed(RouteAction::DirectResponse {
                status: direct.status,
                body: direct.body.clone(),
            });
        }
        if let Some(redirect) = &route.redirect {
            let status = match redirect.response_code.as_deref() {
                Some("FOUND") => 302,
                Some("SEE_OTHER") => 303,
                Some("TEMPORARY_REDIRECT") => 307,
                Some("PERMANENT_REDIRECT") => 308,
                _ => 301,
            };
            return PendingAction::Fixed(RouteAction::Redirect {
                host: redirect.host_redirect.clone(),
                path: redirect.path_redirect.clone(),
                status,
            });
        }
        let Some(forward) = &route.forward_to else {
            // ROUTE_REPLACEMENT: a route Trellis cannot serve answers 500 instead of vanishing.
            // (Delegating routes never get here: `delegation` replaced them by their children.)
            self.warnings.add(
                table,
                format!("spec.http[{index}]: graphql actions are not supported yet; the route answers 500"),
            );
            return replacement("route action not supported");
        };
        // Gloo: a forwardTo without destinations goes to the table's defaultDestination.
        // (position in `destinations`, or `None` for the default destination).
        let given: Vec<(Option<usize>, &DestinationReference)> =
            match (forward.destinations.is_empty(), default_destination) {
                (true, Some(default)) => vec![(None, default)],
                _ => forward
                    .destinations
                    .iter()
                    .enumerate()
                    .map(|(d, r)| (Some(d), r))
                    .collect(),
            };
        let mut destinations = Vec::new();
        for (d, destination) in given {
            match self.destination_target(namespace, destination, port) {
                Ok(target) => destinations.push((target, destination.weight)),
                Err(problem) => {
                    let field = match d {
                        Some(d) => format!("spec.http[{index}].forwardTo.destinations[{d}]"),
                        None => format!("spec.defaultDestination (for spec.http[{index}])"),
                    };
                    self.warnings
                        .add(table, format!("{field}: {problem}; the route answers 500"));
                    return replacement(&problem);
                }
            }
        }
        // Unset weights count as zero unless every weight is unset: then the split is even.
        let all_unset = destinations.iter().all(|(_, w)| w.is_none());
        let weighted: Vec<(usize, u32)> = destinations
            .into_iter()
            .map(|(t, w)| (t, if all_unset { 1 } else { w.unwrap_or(0) }))
            .filter(|(_, w)| *w > 0)
            .collect();
        if weighted.is_empty() {
            self.warnings.add(
                table,
                format!("spec.http[{index}].forwardTo: every destination has weight 0; the route answers 500"),
            );
            return replacement("every destination has weight 0");
        }
        PendingAction::Forward {
            destinations: weighted,
            path_rewrite: forward.path_rewrite.clone(),
            host_rewrite: forward.host_rewrite.clone(),
        }
    }

    fn destination_target(
        &mut self,
        namespace: &str,
        destination: &DestinationReference,
        port: Option<u16>,
    ) -> Result<usize, String> {
        let reference = &destination.reference;
        let ref_namespace = if reference.namespace.is_empty() {
            namespace
        } else {
            reference.namespace.as_str()
        };
        let (number, name) = match &destination.port {
            Some(p) => (p.number, p.name.clone()),
            None => (port.map(u32::from), None),
        };
        match destination.kind {
            DestinationKind::VirtualDestination => {
                let found = self
                    .virtual_destinations
                    .get(&(ref_namespace, reference.name.as_str()))
                    .copied();
                let Some((resource, spec)) = found else {
                    return Err(format!(
                        "VirtualDestination {ref_namespace}/{} not found",
                        reference.name
                    ));
                };
                let vd_port = match (number, &name) {
                    (Some(n), _) => spec.ports.iter().find(|p| p.number == n),
                    (None, _) if spec.ports.len() == 1 => spec.ports.first(),
                    _ => None,
                };
                let (Some(vd_port), Some(vd_host)) = (vd_port, spec.hosts.first()) else {
                    return Err(format!(
                        "VirtualDestination {ref_namespace}/{} has no port {}",
                        reference.name,
                        port_label(number, name.as_deref())
                    ));
                };
                let vd = VdHost {
                    resource,
                    spec,
                    host: vd_host,
                    port: vd_port.number as u16,
                };
                Ok(self.vd_target(&vd, &destination.subset))
            }
            DestinationKind::Service => {
                let backends = self.services.backends(
                    ref_namespace,
                    &reference.name,
                    &reference.cluster,
                    number,
                    name.as_deref(),
                );
                let port = backends
                    .first()
                    .map(|b| b.port)
                    .or(number.and_then(|n| u16::try_from(n).ok()));
                let Some(port) = port else {
                    return Err(format!(
                        "service {ref_namespace}/{}: give a port, the service is not discovered yet",
                        reference.name
                    ));
                };
                let scope = if reference.cluster.is_empty() {
                    "mesh"
                } else {
                    reference.cluster.as_str()
                };
                let target_host = format!("{}.{}.svc.{}", reference.name, ref_namespace, scope);
                Ok(self.intern(Target {
                    host: target_host,
                    port,
                    subset: destination.subset.clone(),
                    backends,
                    virtual_destination: None,
                }))
            }
            DestinationKind::ExternalService => Err("EXTERNAL_SERVICE destinations are not supported yet".to_string()),
        }
    }
}

fn port_label(number: Option<u32>, name: Option<&str>) -> String {
    match (number, name) {
        (Some(n), _) => n.to_string(),
        (None, Some(name)) => format!("named {name:?}"),
        (None, None) => "(none given and not exactly one port)".to_string(),
    }
}

fn replacement(problem: &str) -> PendingAction {
    PendingAction::Fixed(RouteAction::DirectResponse {
        status: 500,
        body: format!("trellis: route replaced: {problem}\n"),
    })
}

pub(crate) fn value_match(value: &Option<String>, regex: bool) -> ValueMatch {
    match (value, regex) {
        (None, _) => ValueMatch::Present,
        (Some(v), true) => ValueMatch::Regex(v.clone()),
        (Some(v), false) => ValueMatch::Exact(v.clone()),
    }
}

fn route_match(matcher: &RequestMatcher) -> RouteMatch {
    let (path, ignore_case) = match &matcher.uri {
        Some(uri) => {
            let path = if let Some(exact) = &uri.exact {
                PathMatch::Exact(exact.clone())
            } else if let Some(regex) = &uri.regex {
                PathMatch::Regex(regex.clone())
            } else {
                PathMatch::Prefix(uri.prefix.clone().unwrap_or_else(|| "/".into()))
            };
            (path, uri.ignore_case)
        }
        None => (PathMatch::Prefix("/".into()), false),
    };
    RouteMatch {
        path,
        ignore_case,
        headers: matcher
            .headers
            .iter()
            .map(|h| HeaderMatch {
                name: h.name.clone(),
                value: value_match(&h.value, h.regex),
                invert: h.invert_match,
            })
            .collect(),
        query_params: matcher
            .query_parameters
            .iter()
            .map(|q| QueryParamMatch {
                name: q.name.clone(),
                value: value_match(&q.value, q.regex),
            })
            .collect(),
        method: (!matcher.method.is_empty()).then(|| matcher.method.clone()),
    }
}

impl OutboundHost {
    /// Resolves target indexes to upstream names for the IR.
    pub(crate) fn to_ir(&self, targets: &[Target]) -> VirtualHost {
        let routes = self
            .routes
            .iter()
            .map(|route| Route {
                name: route.name.clone(),
                matcher: route.matcher.clone(),
                policies: route.policies.clone(),
                action: match &route.action {
                    PendingAction::Fixed(action) => action.clone(),
                    PendingAction::Forward {
                        destinations,
                        path_rewrite,
                        host_rewrite,
                    } => RouteAction::Forward(Forward {
                        destinations: destinations
                            .iter()
                            .map(|(index, weight)| trellis_model::ir::WeightedUpstream {
                                upstream: targets[*index].upstream_name(),
                                weight: *weight,
                            })
                            .collect(),
                        path_rewrite: path_rewrite.clone(),
                        host_rewrite: host_rewrite.clone(),
                    }),
                },
            })
            .collect();
        VirtualHost {
            name: self.name.clone(),
            domains: self.domains.clone(),
            workspaces: self.workspaces.clone(),
            routes,
            clients: self.clients.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
