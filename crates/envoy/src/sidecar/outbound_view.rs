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
    // Most sidecars have no override: their hosts are the defaults as they are.
    if overriding.is_empty() {
        return defaults.into_iter().map(Cow::Borrowed).collect();
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use trellis_model::ir::{ClientSelector, Route, RouteAction, RouteMatch};

    use super::*;

    const DOMAINS: [&str; 2] = ["reviews.shop.svc.cluster.local:9080", "reviews.shop:9080"];

    /// A host for `DOMAINS` whose one route answers `status`.
    fn mk_host(name: &str, status: u32, clients: Option<Vec<ClientSelector>>) -> VirtualHost {
        VirtualHost {
            name: name.to_string(),
            domains: DOMAINS.iter().map(|d| d.to_string()).collect(),
            routes: vec![Route {
                name: format!("{name}/route"),
                matcher: RouteMatch::default(),
                action: RouteAction::DirectResponse {
                    status,
                    body: String::new(),
                },
                policies: Default::default(),
            }],
            workspaces: None,
            clients,
        }
    }

    fn app(name: &str) -> ClientSelector {
        ClientSelector {
            labels: BTreeMap::from([("app".to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    fn mk_workload(app: &str) -> Workload {
        Workload {
            name: app.to_string(),
            namespace: "shop".to_string(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ..Default::default()
        }
    }

    fn mk_config(hosts: Vec<VirtualHost>) -> ClusterConfig {
        ClusterConfig {
            cluster: "cluster-1".to_string(),
            virtual_hosts: hosts.into_iter().map(Arc::new).collect(),
            ..Default::default()
        }
    }

    /// (status of each route, domains) of the hosts `workload`'s sidecar serves.
    fn served(config: &ClusterConfig, workload: &Workload) -> Vec<(Vec<u32>, Vec<String>)> {
        let view = outbound_view(config, workload, &overriding_hosts(config));
        outbound_hosts(config, &view)
            .iter()
            .map(|h| {
                let statuses = h
                    .routes
                    .iter()
                    .map(|r| match r.action {
                        RouteAction::DirectResponse { status, .. } => status,
                        _ => 0,
                    })
                    .collect();
                (statuses, h.domains.clone())
            })
            .collect()
    }

    fn domains() -> Vec<String> {
        DOMAINS.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn selected_client_gets_the_overriding_host_and_others_the_default() {
        let config = mk_config(vec![
            mk_host("reviews:9080", 200, None),
            mk_host("reviews:9080@1/shop/v2", 503, Some(vec![app("productpage")])),
        ]);
        assert_eq!(served(&config, &mk_workload("productpage")), [(vec![503], domains())]);
        assert_eq!(served(&config, &mk_workload("ratings")), [(vec![200], domains())]);
    }

    #[test]
    fn overriding_hosts_that_both_apply_concatenate_their_routes_in_order() {
        let config = mk_config(vec![
            mk_host("reviews:9080", 200, None),
            mk_host("reviews:9080@1/shop/a", 501, Some(vec![app("productpage")])),
            mk_host("reviews:9080@2/shop/b", 502, Some(Vec::new())),
        ]);
        assert_eq!(
            served(&config, &mk_workload("productpage")),
            [(vec![501, 502], domains())]
        );
        assert_eq!(
            served(&config, &mk_workload("ratings")),
            [(vec![502], domains())],
            "a table without selectors overrides for every client"
        );
    }

    #[test]
    fn selector_matches_namespace_cluster_and_workspace() {
        let only = |selector: ClientSelector| {
            mk_config(vec![
                mk_host("reviews:9080", 200, None),
                mk_host("reviews:9080@1/shop/v2", 503, Some(vec![selector])),
            ])
        };
        let productpage = mk_workload("productpage");
        let in_namespace = |ns: &str| ClientSelector {
            namespace: Some(ns.to_string()),
            ..app("productpage")
        };
        assert_eq!(served(&only(in_namespace("shop")), &productpage)[0].0, [503]);
        assert_eq!(served(&only(in_namespace("other")), &productpage)[0].0, [200]);
        let in_cluster = |c: &str| ClientSelector {
            cluster: Some(c.to_string()),
            ..app("productpage")
        };
        assert_eq!(served(&only(in_cluster("cluster-1")), &productpage)[0].0, [503]);
        assert_eq!(served(&only(in_cluster("cluster-2")), &productpage)[0].0, [200]);
        let in_workspace = ClientSelector {
            workspace: Some("shop-ws".to_string()),
            ..app("productpage")
        };
        let mut config = only(in_workspace);
        assert_eq!(
            served(&config, &productpage)[0].0,
            [200],
            "its namespace is in no workspace"
        );
        config
            .namespace_workspaces
            .insert("shop".to_string(), "shop-ws".to_string());
        assert_eq!(served(&config, &productpage)[0].0, [503]);
    }

    #[test]
    fn overriding_host_the_workspace_may_not_see_does_not_apply() {
        let mut hidden = mk_host("reviews:9080@1/shop/v2", 503, Some(vec![app("productpage")]));
        hidden.workspaces = Some(vec!["other".to_string()]);
        let mut config = mk_config(vec![mk_host("reviews:9080", 200, None), hidden]);
        config
            .namespace_workspaces
            .insert("shop".to_string(), "shop-ws".to_string());
        assert_eq!(served(&config, &mk_workload("productpage")), [(vec![200], domains())]);
    }

    #[test]
    fn default_host_keeps_the_domains_no_override_claims() {
        let mut partial = mk_host("reviews:9080@1/shop/v2", 503, Some(Vec::new()));
        partial.domains.truncate(1);
        let config = mk_config(vec![mk_host("reviews:9080", 200, None), partial]);
        assert_eq!(
            served(&config, &mk_workload("ratings")),
            [
                (vec![503], vec![DOMAINS[0].to_string()]),
                (vec![200], vec![DOMAINS[1].to_string()])
            ]
        );
    }
}
