//! A RouteTable edit, translated by the virtual hosts it can change.
//!
//! A sidecar route table only shapes the virtual hosts of its own hosts. When an edit keeps the
//! targets those hosts send to (the same lookups, in the same order, so the same upstreams),
//! keeps who may see each upstream, and touches no route a policy selects, then everything else
//! of the translation is what it was: the edit is applied by rebuilding just those virtual hosts
//! (before and after, to compare) and the table's own status. Anything else (a new target, a
//! table created or deleted, one bound to gateways, policies on its routes, protected routes
//! mirrored at destinations) is translated in full. A new kind of policy that selects routes
//! must be added to `policies_select` below.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use trellis_api::{Resource, ResourceKey, RouteTableSpec, Spec};
use trellis_model::Snapshot;
use trellis_model::ir::VirtualHost;

use super::Incremental;
use crate::Warnings;
use crate::outbound::{self, KnownBackends, Outbound, Part};
use crate::service_index::ServiceIndex;
use crate::workspaces::Workspaces;

/// What a route table edit rewrote: the same virtual hosts in every cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteChanges {
    /// Names of the virtual hosts replaced, sorted.
    pub virtual_hosts: Vec<String>,
    /// Keys (`Kind/namespace/name`) of the resources whose warnings and status were recomputed.
    pub statuses: Vec<String>,
}

impl Incremental {
    /// `snapshot` is the previous one with the resources of `edited` replaced; `edited` holds
    /// each one's version before. Applies the edit if it is a route table edit that only
    /// reshapes its hosts' routes and says what it rewrote; `None` when it reaches further (then
    /// call `retranslate`).
    pub fn route_tables_edited(
        &mut self,
        snapshot: &Snapshot,
        edited: &BTreeMap<ResourceKey, Option<Resource>>,
    ) -> Option<RouteChanges> {
        // A delegating route takes in the routes of tables other than the one edited, and its
        // virtual hosts are not those of the edited table's hosts.
        if delegation_involved(snapshot, edited) {
            return None;
        }
        let tables = edited_tables(snapshot, edited)?;
        // Warnings about fields not applied come from full translation only.
        let unapplied = |spec: &RouteTableSpec| crate::unapplied::route_table_has_any(spec);
        if tables
            .values()
            .any(|edit| edit.old.is_some_and(unapplied) || unapplied(edit.new))
        {
            return None;
        }
        // A route to a protected destination is mirrored at that destination's sidecar.
        if self.translation.clusters.values().any(|c| !c.inbound_routes.is_empty()) {
            return None;
        }
        let hosts: BTreeSet<String> = tables
            .values()
            .flat_map(|edit| edit.old.into_iter().flat_map(|o| &o.hosts).chain(&edit.new.hosts))
            .cloned()
            .collect();
        // A Kubernetes-style service name resolves against every cluster's services, and its
        // hosts differ by cluster: such an edit is translated in full.
        if hosts.iter().any(|h| outbound::may_name_service(h)) {
            return None;
        }
        let created = tables.values().filter(|edit| edit.old.is_none()).count();

        let mut ignored = Warnings::default();
        let restricted = crate::announcements::restrict(snapshot, &mut ignored);
        let snapshot = restricted.as_ref().unwrap_or(snapshot);
        let workspaces = Workspaces::from(snapshot);
        // The VirtualDestinations' backends are those the last full translation resolved (the
        // edit changed no service and no VirtualDestination), so only the services route tables
        // name directly are looked up: indexing every service would cost what the mesh holds.
        // Federated hosts are made from every service: then index them all.
        let federated = !workspaces.federations().is_empty();
        let services = if federated {
            snapshot.services()
        } else {
            snapshot.services_named(&named_services(snapshot, &hosts, edited))
        };
        let index = ServiceIndex::new(&services);
        let plan = &self.plan;
        let known = |namespace: &str, name: &str, host: &str, port: u16| plan.vd_backends(namespace, name, host, port);
        let part = Part {
            hosts: &hosts,
            known_backends: (!federated).then_some(&known as KnownBackends),
        };
        let part = |before: bool, warnings: &mut Warnings| {
            let route_tables = snapshot
                .route_tables()
                .filter(|(_, spec)| spec.hosts.iter().any(|h| hosts.contains(h)))
                .filter_map(|(resource, spec)| match tables.get(&resource.key()) {
                    Some(edit) if before => edit.old.map(|old| (old_resource(edited, resource), old)),
                    _ => Some((resource, spec)),
                });
            outbound::build_part(snapshot, route_tables, Some(&part), &index, &workspaces, warnings)
        };
        let (mut old_warnings, mut new_warnings) = (Warnings::default(), Warnings::default());
        let old = part(true, &mut old_warnings);
        let new = part(false, &mut new_warnings);

        // The same target lookups in the same order intern the same targets in the same order.
        // Tables created after every other one look up after everything else: their lookups
        // may follow, as long as each finds a target the mesh already has.
        let same_start = old.encounters.len() <= new.encounters.len()
            && old
                .encounters
                .iter()
                .zip(&new.encounters)
                .all(|(a, b)| old.targets[*a] == new.targets[*b]);
        let more = &new.encounters[old.encounters.len().min(new.encounters.len())..];
        let same_lookups = same_start
            && (more.is_empty()
                || (created == tables.len() && more.iter().all(|i| self.plan.contains(&new.targets[*i]))));
        let names = |o: &Outbound| o.virtual_hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        if old.unknown_backends || new.unknown_backends || !same_lookups || names(&old) != names(&new) {
            return None;
        }
        if policies_select(snapshot, &[&old, &new]) {
            return None;
        }
        // Which clusters carry a cluster's own service target depends on whether any mesh-wide
        // route sends there: the edit must keep the set of those its routes send to.
        fn local_services(o: &Outbound) -> BTreeSet<&crate::target::Target> {
            let routes = o.virtual_hosts.iter().flat_map(|h| &h.routes);
            routes
                .flat_map(|r| match &r.action {
                    outbound::PendingAction::Forward { destinations, .. } => destinations.as_slice(),
                    outbound::PendingAction::Fixed(_) => &[],
                })
                .map(|(i, _)| &o.targets[*i])
                .filter(|t| outbound::is_local_service_target(t))
                .collect()
        }
        if local_services(&old) != local_services(&new) {
            return None;
        }
        let to_ir =
            |o: &Outbound| -> Vec<VirtualHost> { o.virtual_hosts.iter().map(|h| h.to_ir(&o.targets)).collect() };
        let (old_hosts, new_hosts) = (to_ir(&old), to_ir(&new));
        let arcs = |hosts: &[VirtualHost]| hosts.iter().cloned().map(Arc::new).collect::<Vec<_>>();
        // Who may see each upstream is the union over the hosts that route to it; without
        // Workspaces every host is seen by all, and so is every upstream.
        if workspaces.defined()
            && crate::workspaces::upstream_scopes(&arcs(&old_hosts))
                != crate::workspaces::upstream_scopes(&arcs(&new_hosts))
        {
            return None;
        }
        let edited_keys: BTreeSet<String> = tables.keys().map(|k| k.to_string()).collect();
        let others = |w: &Warnings| -> BTreeMap<String, Vec<String>> {
            w.0.iter()
                .filter(|(key, _)| !edited_keys.contains(*key))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if others(&old_warnings) != others(&new_warnings) {
            return None;
        }
        // Every cluster holds every mesh virtual host; check before changing anything.
        let held = self.translation.clusters.values().all(|config| {
            new_hosts
                .iter()
                .all(|h| config.virtual_hosts.binary_search_by(|v| v.name.cmp(&h.name)).is_ok())
        });
        if !held {
            return None;
        }

        let mut changes = RouteChanges::default();
        for host in new_hosts {
            let mut shared: Option<Arc<VirtualHost>> = None;
            for config in self.translation.clusters.values_mut() {
                let Ok(at) = config.virtual_hosts.binary_search_by(|v| v.name.cmp(&host.name)) else {
                    continue;
                };
                if *config.virtual_hosts[at] == host {
                    continue;
                }
                let replacement = shared.get_or_insert_with(|| Arc::new(host.clone()));
                config.virtual_hosts[at] = replacement.clone();
            }
            if shared.is_some() {
                changes.virtual_hosts.push(host.name);
            }
        }

        let cluster_names: Vec<String> = snapshot.clusters().into_iter().collect();
        let visibility = crate::status_visibility(&workspaces, snapshot);
        for key in &edited_keys {
            match new_warnings.0.remove(key) {
                Some(list) => self.translation.warnings.insert(key.clone(), list),
                None => self.translation.warnings.remove(key),
            };
        }
        let resources: Vec<Resource> = tables.values().map(|edit| edit.resource.clone()).collect();
        let statuses = crate::status::compute(
            &resources,
            &self.translation.warnings,
            &crate::report::Report::default(),
            &cluster_names,
            visibility,
        );
        for (key, status) in statuses {
            if self.translation.statuses.get(&key) != Some(&status) {
                changes.statuses.push(key.clone());
                self.translation.statuses.insert(key, status);
            }
        }
        Some(changes)
    }
}

/// True when a route table, now or before the edit, delegates: then any table's edit (its
/// labels, its routes, its existence) can change what a delegating table serves.
fn delegation_involved(snapshot: &Snapshot, edited: &BTreeMap<ResourceKey, Option<Resource>>) -> bool {
    let before = edited.values().flatten().filter_map(|r| match &r.spec {
        Spec::RouteTable(spec) => Some(spec),
        _ => None,
    });
    snapshot
        .route_tables()
        .map(|(_, spec)| spec)
        .chain(before)
        .any(|spec| spec.http.iter().any(|route| route.delegate.is_some()))
}

/// One edited route table.
struct Edit<'s> {
    /// `None`: created by this edit.
    old: Option<&'s RouteTableSpec>,
    new: &'s RouteTableSpec,
    resource: &'s Resource,
}

/// Each edited route table; `None` unless every edited resource is a sidecar route table (no
/// gateways, no workload selectors, no tcp or tls routes) that still exists and either existed before, in the same
/// place in creation order, or is created after every route table there was.
fn edited_tables<'s>(
    snapshot: &'s Snapshot,
    edited: &'s BTreeMap<ResourceKey, Option<Resource>>,
) -> Option<BTreeMap<ResourceKey, Edit<'s>>> {
    if edited.is_empty() {
        return None;
    }
    // Tables with tcp or tls routes carry a warning the full translation gives (ingress_streams).
    let sidecar = |s: &RouteTableSpec| {
        s.virtual_gateways.is_empty() && s.workload_selectors.is_empty() && s.tcp.is_empty() && s.tls.is_empty()
    };
    let mut tables = BTreeMap::new();
    // The newest revision of a table that existed before, and the oldest of one created.
    let (mut newest_kept, mut oldest_created) = (0, u64::MAX);
    for (resource, spec) in snapshot.route_tables() {
        let Some(before) = edited.get(&resource.key()) else {
            newest_kept = newest_kept.max(resource.metadata.creation_revision);
            continue;
        };
        let old = match before {
            Some(before) => {
                let Spec::RouteTable(old) = &before.spec else {
                    return None;
                };
                if before.metadata.creation_revision != resource.metadata.creation_revision {
                    return None;
                }
                newest_kept = newest_kept.max(resource.metadata.creation_revision);
                Some(old)
            }
            None => {
                oldest_created = oldest_created.min(resource.metadata.creation_revision);
                None
            }
        };
        if !sidecar(spec) || old.is_some_and(|o| !sidecar(o)) {
            return None;
        }
        tables.insert(
            resource.key(),
            Edit {
                old,
                new: spec,
                resource,
            },
        );
    }
    // Every edited resource is a route table that still exists (a deletion is not one).
    let created_last = oldest_created == u64::MAX || oldest_created > newest_kept;
    (tables.len() == edited.len() && created_last).then_some(tables)
}

/// The (namespace, name) of every service the route tables on `hosts` forward to by name, in
/// their versions before and after the edit.
fn named_services(
    snapshot: &Snapshot,
    hosts: &BTreeSet<String>,
    edited: &BTreeMap<ResourceKey, Option<Resource>>,
) -> BTreeSet<(String, String)> {
    let before = edited.values().flatten().filter_map(|r| match &r.spec {
        Spec::RouteTable(spec) => Some((r, spec)),
        _ => None,
    });
    let tables = snapshot
        .route_tables()
        .chain(before)
        .filter(|(_, spec)| spec.hosts.iter().any(|h| hosts.contains(h)));
    let mut named = BTreeSet::new();
    for (resource, spec) in tables {
        let destinations = spec
            .http
            .iter()
            .flat_map(|r| &r.forward_to)
            .flat_map(|f| &f.destinations);
        for destination in destinations.filter(|d| d.kind == trellis_api::DestinationKind::Service) {
            let reference = &destination.reference;
            let namespace = if reference.namespace.is_empty() {
                &resource.metadata.namespace
            } else {
                &reference.namespace
            };
            named.insert((namespace.clone(), reference.name.clone()));
        }
    }
    named
}

/// The version of `resource` before the edit.
fn old_resource<'s>(edited: &'s BTreeMap<ResourceKey, Option<Resource>>, resource: &'s Resource) -> &'s Resource {
    edited.get(&resource.key()).and_then(Option::as_ref).unwrap_or(resource)
}

/// True when a route-level or add-on policy selects one of the routes of the parts built.
fn policies_select(snapshot: &Snapshot, parts: &[&Outbound]) -> bool {
    let route_policies = crate::route_policies::selectors(snapshot);
    let addon_policies = crate::addons::route_selectors(snapshot);
    if route_policies.is_empty() && addon_policies.is_empty() {
        return false;
    }
    // Without a service index every service destination counts as selected: the question is
    // only whether some policy might apply, and a yes leaves the change to full translation.
    let workspaces = crate::workspaces::Workspaces::from(snapshot);
    let lookup = crate::destination_policies::DestinationLookup {
        snapshot,
        workspaces: &workspaces,
        services: None,
    };
    parts.iter().any(|built| {
        built.virtual_hosts.iter().flat_map(|h| &h.routes).any(|route| {
            route_policies
                .iter()
                .any(|selectors| crate::route_policies::selects(selectors, route))
                || addon_policies.iter().any(|(namespace, selectors)| {
                    crate::addons::selects(*selectors, route, &built.targets, &lookup, namespace)
                })
        })
    })
}
