//! Which outbound virtual hosts one sidecar gets.
//!
//! A cluster's config holds default hosts (VirtualDestinations, Kubernetes-style service names,
//! route tables for all) and overriding ones (route tables with `workloadSelectors`, or on a
//! service's name) that apply to some client workloads only. A sidecar sees what its workspace
//! may see; for each domain, an overriding host that applies to its workload takes the place of
//! the default one. Sidecars with the same view share one outbound build, so the view is small:
//! the workspace and the names of the overriding hosts that apply.

use std::borrow::Cow;
use std::collections::HashMap;

use trellis_model::ir::{Client, VirtualHost, visible};
use trellis_model::{ClusterConfig, Workload};

/// What a sidecar's outbound routes depend on, beside the cluster's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboundView {
    /// The workload's workspace (`None`: in none, or Workspaces unused).
    pub workspace: Option<String>,
    /// Names of the overriding virtual hosts that apply to the workload, in config order.
    pub overrides: Vec<String>,
}

/// Indexes of the config's overriding virtual hosts: computed once per config, so that finding
/// a sidecar's view looks at these few, not at every host.
pub fn overriding_hosts(ir: &ClusterConfig) -> Vec<usize> {
    ir.virtual_hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.clients.is_some())
        .map(|(i, _)| i)
        .collect()
}

/// The view of `workload`'s sidecar; `overriding` is what [`overriding_hosts`] gave for `ir`.
pub fn outbound_view(ir: &ClusterConfig, workload: &Workload, overriding: &[usize]) -> OutboundView {
    let workspace = super::sidecar_workspace(ir, workload);
    let client = Client {
        cluster: &ir.cluster,
        namespace: &workload.namespace,
        labels: &workload.labels,
        workspace,
    };
    let overrides = overriding
        .iter()
        .filter_map(|&i| ir.virtual_hosts.get(i))
        .filter(|h| visible(&h.workspaces, workspace) && h.overrides_for(&client))
        .map(|h| h.name.clone())
        .collect();
    OutboundView {
        workspace: workspace.map(str::to_string),
        overrides,
    }
}

/// The virtual hosts a sidecar with `view` serves, each domain in exactly one (as Envoy
/// requires). Overriding hosts claim their domains first, in config order (oldest route table
/// first); a later one with the same domains adds its routes after the earlier one's. Default
/// hosts keep the domains left, and are dropped when none are.
pub fn outbound_hosts<'a>(ir: &'a ClusterConfig, view: &OutboundView) -> Vec<Cow<'a, VirtualHost>> {
    let workspace = view.workspace.as_deref();
    let seen = ir
        .virtual_hosts
        .iter()
        .map(|h| &**h)
        .filter(|h| visible(&h.workspaces, workspace));
    let (overriding, defaults): (Vec<&VirtualHost>, Vec<&VirtualHost>) = seen
        .filter(|h| h.clients.is_none() || view.overrides.contains(&h.name))
        .partition(|h| h.clients.is_some());
    let mut hosts: Vec<Cow<VirtualHost>> = Vec::new();
    let mut claimed: HashMap<&str, usize> = HashMap::new();
    for host in overriding {
        let same_domains = host.domains.first().and_then(|d| claimed.get(d.as_str())).copied();
        if let Some(at) = same_domains.filter(|&at| hosts[at].domains == host.domains) {
            hosts[at].to_mut().routes.extend(host.routes.iter().cloned());
            continue;
        }
        push_unclaimed(host, &mut hosts, &mut claimed);
    }
    for host in defaults {
        push_unclaimed(host, &mut hosts, &mut claimed);
    }
    hosts
}

/// Adds `host` with the domains no host has yet (as is when it has them all).
fn push_unclaimed<'a>(
    host: &'a VirtualHost,
    hosts: &mut Vec<Cow<'a, VirtualHost>>,
    claimed: &mut HashMap<&'a str, usize>,
) {
    let free: Vec<&String> = host
        .domains
        .iter()
        .filter(|d| !claimed.contains_key(d.as_str()))
        .collect();
    if free.is_empty() {
        return;
    }
    let at = hosts.len();
    for domain in &free {
        claimed.insert(domain.as_str(), at);
    }
    if free.len() == host.domains.len() {
        hosts.push(Cow::Borrowed(host));
    } else {
        hosts.push(Cow::Owned(VirtualHost {
            domains: free.into_iter().cloned().collect(),
            ..host.clone()
        }));
    }
}
