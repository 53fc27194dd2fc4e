//! Per-proxy Envoy snapshots: rebuilt whenever the cluster's config, the set of registered
//! proxies, the cluster CA or a due workload certificate changes, and handed to the ADS server
//! through one watch channel per node id — only to a stream whose TLS client certificate was
//! issued to the node's current registration (a sidecar's snapshot holds its private key).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use trellis_envoy::{GatewaySpec, SidecarSpec};
use trellis_xds::{Resource, Snapshot, SnapshotSource, StreamPeer};

use super::registry::{ProxyRegistration, Registry};
use super::{Agent, AppliedConfig, mesh_identity};

type SnapshotWatch = watch::Sender<Option<Arc<Snapshot>>>;

pub struct ProxySnapshots {
    /// Whose credential each node id is.
    registry: Arc<Registry>,
    by_node: Mutex<BTreeMap<String, SnapshotWatch>>,
    /// Per node, the version of the cluster config its current snapshot was built from.
    built_from: Mutex<BTreeMap<String, String>>,
    /// Poked when a new node subscribes, so its snapshot is built right away.
    new_node: tokio::sync::Notify,
}

impl SnapshotSource for ProxySnapshots {
    /// The stream's TLS client certificate must be one the agent issued to the node's current
    /// registration (see `Registry::authorize_xds`). The registration token is not asked for:
    /// it would have to be in Envoy's bootstrap, which Envoy's admin `/config_dump` shows.
    fn authorize(&self, node_id: &str, peer: &StreamPeer) -> Result<(), tonic::Status> {
        let Some(certificate) = peer.client_certificate.as_deref() else {
            // The agent's listener requires a certificate; this is a server wired without TLS.
            return Err(tonic::Status::unauthenticated(
                "no client certificate: the xDS port serves only Envoys with the certificate their registration got",
            ));
        };
        self.registry
            .authorize_xds(node_id, certificate)
            .map_err(tonic::Status::unauthenticated)
    }

    /// A node that is not registered (yet) gets `None`: its Envoy is held, never sent an empty
    /// config, until its registration arrives.
    fn subscribe(&self, node_id: &str) -> Result<watch::Receiver<Option<Arc<Snapshot>>>, tonic::Status> {
        let mut by_node = self.by_node.lock().expect("snapshots lock");
        let sender = by_node
            .entry(node_id.to_string())
            .or_insert_with(|| watch::Sender::new(None));
        let receiver = sender.subscribe();
        drop(by_node);
        self.new_node.notify_one();
        Ok(receiver)
    }
}

/// A proxy's resources; `None` while a sidecar's certificate cannot be issued yet (no cluster CA):
/// its Envoy is held rather than given listeners it cannot serve.
impl ProxySnapshots {
    pub fn new(registry: Arc<Registry>) -> Self {
        ProxySnapshots {
            registry,
            by_node: Default::default(),
            built_from: Default::default(),
            new_node: Default::default(),
        }
    }

    /// Ends the ADS streams of `node_id` (its credential was deleted, replaced or expired):
    /// dropping its watch closes them, and a reconnect must present the current credential.
    /// Envoy keeps serving what it has meanwhile.
    /// Drops the snapshots of nodes with no ADS stream open: a proxy that went away holds no
    /// memory; one that comes back is built afresh when it subscribes.
    fn drop_disconnected(&self) {
        let mut by_node = self.by_node.lock().expect("snapshots lock");
        let before = by_node.len();
        by_node.retain(|_, sender| sender.receiver_count() > 0);
        if by_node.len() != before {
            let mut built_from = self.built_from.lock().expect("built_from lock");
            built_from.retain(|node, _| by_node.contains_key(node));
        }
    }

    pub fn forget(&self, node_id: &str) {
        self.by_node.lock().expect("snapshots lock").remove(node_id);
        self.built_from.lock().expect("built_from lock").remove(node_id);
    }
}

/// Resources by type URL, each shared by every snapshot that holds it.
type Typed = BTreeMap<&'static str, Vec<Arc<Resource>>>;

/// The outbound resources of one config, built once per view (workspace, and the overriding
/// route tables that select the workload) and shared by every sidecar with that view: a thousand
/// sidecars of one workspace hold one copy, and a change costs one build, not one per sidecar.
///
/// It also keeps each sidecar's own resources while what they are made from (the config's
/// add-on servers, inbound policies and inbound routes, the workload, its certificate) stays the
/// same: a RouteTable change then rebuilds no sidecar's listeners.
#[derive(Default)]
pub struct SharedOutbound {
    version: String,
    by_view: BTreeMap<trellis_envoy::OutboundView, Arc<Typed>>,
    /// What `by_view` held for the previous config, whose unchanged resources are reused.
    previous: BTreeMap<trellis_envoy::OutboundView, Arc<Typed>>,
    /// Indexes of the config's overriding virtual hosts, the only ones a view depends on.
    overriding: Vec<usize>,
    /// Hash of what a sidecar's own resources take from the config.
    local_inputs: u64,
    locals: BTreeMap<String, LocalPart>,
}

/// A sidecar's own resources and what they were made from.
struct LocalPart {
    inputs: u64,
    workload: trellis_model::Workload,
    outbound_port: u16,
    access_log: trellis_model::access_log::AccessLogSink,
    cert_pem: String,
    root_pem: String,
    typed: Arc<Typed>,
}

impl SharedOutbound {
    fn refresh(&mut self, config: &AppliedConfig) {
        if self.version != config.version {
            self.version = config.version.clone();
            self.previous = std::mem::take(&mut self.by_view);
            self.overriding = trellis_envoy::overriding_hosts(config);
            let inputs = serde_json::to_vec(&(
                &config.addon_servers,
                &config.inbound_policies,
                &config.inbound_routes,
                &config.access_logs,
                trellis_envoy::sidecar_listener_route_inputs(config),
            ))
            .expect("IR serializes");
            self.local_inputs = trellis_base::stable_hash(&inputs);
        }
    }

    /// Lets go of the previous config's resources once every proxy has been built from this one.
    fn settle(&mut self) {
        self.previous.clear();
    }

    /// Forgets the own resources of sidecars no longer served.
    fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.locals.retain(|node, _| live(node));
    }

    fn get(&mut self, config: &AppliedConfig, workload: &trellis_model::Workload) -> Arc<Typed> {
        self.refresh(config);
        let view = trellis_envoy::outbound_view(config, workload, &self.overriding);
        if let Some(built) = self.by_view.get(&view) {
            return built.clone();
        }
        let mut resources = trellis_envoy::sidecar_outbound(config, &view);
        crate::system_ca::add_if_used(&mut resources, config);
        let fresh = typed(resources);
        let built = Arc::new(reuse_unchanged(fresh, self.previous.get(&view).map(|t| &**t)));
        self.by_view.insert(view, built.clone());
        built
    }
}

/// Sorted by name, as a snapshot keeps them: assembling a proxy's snapshot from its own list and
/// the shared one then merges two sorted runs instead of sorting a thousand names per proxy.
fn typed(resources: trellis_envoy::ProxyResources) -> Typed {
    let mut typed = Typed::new();
    for (type_url, name, any) in resources.into_typed() {
        typed.entry(type_url).or_default().push(Resource::new(name, any));
    }
    for list in typed.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    typed
}

pub fn build(
    agent: &Agent,
    config: &AppliedConfig,
    node_id: &str,
    registration: &ProxyRegistration,
    shared: &mut SharedOutbound,
) -> Option<Snapshot> {
    let own = match registration {
        ProxyRegistration::Sidecar {
            workload,
            outbound_port,
            ..
        } => {
            let ca = agent.mesh.borrow().clone()?;
            let spiffe_id = trellis_model::spiffe_id(&ca.trust_domain, &workload.namespace, &workload.service_account);
            let cert = match agent.certs.get(&ca, &spiffe_id) {
                Ok(cert) => cert,
                Err(error) => {
                    tracing::error!(%error, spiffe_id, "cannot issue a workload certificate");
                    return None;
                }
            };
            let outbound = shared.get(config, workload);
            let inputs = shared.local_inputs;
            let kept = shared.locals.get(node_id).filter(|part| {
                part.inputs == inputs
                    && part.workload == *workload
                    && part.outbound_port == *outbound_port
                    && part.access_log == *registration.access_log()
                    && part.cert_pem == cert.cert_pem
                    && part.root_pem == ca.root_pem
            });
            let own = match kept {
                Some(part) => part.typed.clone(),
                None => {
                    let spec = SidecarSpec {
                        workload,
                        outbound_address: "127.0.0.1",
                        outbound_port: *outbound_port,
                        inbound_address: &workload.address,
                        access_log: registration.access_log(),
                    };
                    let mut resources = trellis_envoy::sidecar_local(config, &spec);
                    let service = format!("{}.{}", workload.service, workload.namespace);
                    trace_requests(agent, &mut resources, &service);
                    resources.secrets = trellis_envoy::secrets(&cert.cert_pem, &cert.key.0, &ca.root_pem);
                    let before = shared.locals.get(node_id).map(|part| &*part.typed);
                    let typed = Arc::new(reuse_unchanged(typed(resources), before));
                    let part = LocalPart {
                        inputs,
                        workload: workload.clone(),
                        outbound_port: *outbound_port,
                        access_log: registration.access_log().clone(),
                        cert_pem: cert.cert_pem.clone(),
                        root_pem: ca.root_pem.clone(),
                        typed: typed.clone(),
                    };
                    shared.locals.insert(node_id.to_string(), part);
                    typed
                }
            };
            return Some(assemble(&own, Some(&outbound)));
        }
        ProxyRegistration::IngressGateway(ingress) => {
            let ca = agent.mesh.borrow().clone()?;
            let spiffe_id = trellis_model::spiffe_id(&ca.trust_domain, &ingress.namespace, &ingress.service_account);
            let cert = match agent.certs.get(&ca, &spiffe_id) {
                Ok(cert) => cert,
                Err(error) => {
                    tracing::error!(%error, spiffe_id, "cannot issue the ingress gateway's certificate");
                    return None;
                }
            };
            let spec = trellis_envoy::IngressSpec {
                labels: &ingress.labels,
                listen_address: &ingress.listen_address,
                port_map: &ingress.port_map,
                namespace: &ingress.namespace,
                access_log: registration.access_log(),
            };
            let mut resources = trellis_envoy::ingress_gateway(config, &spec);
            trace_requests(
                agent,
                &mut resources,
                &format!("{}.{}", ingress.service_account, ingress.namespace),
            );
            // Its listeners' Secrets (secretName) come with it; the mesh identity is added, and
            // the host's CA bundle when a cluster trusts it.
            resources
                .secrets
                .extend(trellis_envoy::secrets(&cert.cert_pem, &cert.key.0, &ca.root_pem));
            crate::system_ca::add_if_used(&mut resources, config);
            resources
        }
        // Add-ons load their config from the agent's HTTP API, not over xDS.
        ProxyRegistration::AddOn(_) => return None,
        ProxyRegistration::EastWestGateway(gateway) => {
            let mut resources = trellis_envoy::east_west_gateway(
                config,
                &GatewaySpec {
                    listen_address: &gateway.listen_address,
                    port: gateway.port,
                },
            );
            // Where TLS ends here (clientMode: tlsTermination), the gateway needs an identity.
            if config.gateway_upstreams.iter().any(|u| u.terminate_tls) {
                let ca = agent.mesh.borrow().clone()?;
                let spiffe_id = trellis_model::east_west_gateway_identity(&ca.trust_domain);
                match agent.certs.get(&ca, &spiffe_id) {
                    Ok(cert) => {
                        resources
                            .secrets
                            .extend(trellis_envoy::secrets(&cert.cert_pem, &cert.key.0, &ca.root_pem))
                    }
                    Err(error) => {
                        tracing::error!(%error, spiffe_id, "cannot issue the east-west gateway's certificate");
                        return None;
                    }
                }
            }
            resources
        }
    };
    // Gateways are few: built whole each time.
    Some(assemble(&typed(own), None))
}

/// Request tracing in the proxy's HTTP listeners, when the agent was given a collector. The
/// outbound routes shared between sidecars are untouched: tracing lives in each proxy's own
/// listeners, which carry its service name.
fn trace_requests(agent: &Agent, resources: &mut trellis_envoy::ProxyResources, service_name: &str) {
    if let Some(tracing) = &agent.proxy_tracing {
        let spec = trellis_envoy::TraceSpec {
            collector_address: &tracing.collector.host,
            collector_port: tracing.collector.port,
            sampling_percent: tracing.sampling_percent,
            service_name,
        };
        trellis_envoy::with_tracing(resources, &spec);
    }
}

/// A proxy's snapshot: its own resources and the shared ones, by type. Both are sorted by name
/// and its own are few, so each is put in its place in a copy of the shared list.
fn assemble(own: &Typed, shared: Option<&Typed>) -> Snapshot {
    let mut all: BTreeMap<&'static str, Vec<Arc<Resource>>> = BTreeMap::new();
    for (type_url, list) in shared.into_iter().flatten() {
        all.insert(type_url, list.clone());
    }
    for (type_url, list) in own {
        let merged = all.entry(type_url).or_default();
        for resource in list {
            let at = merged.partition_point(|r| r.name < resource.name);
            merged.insert(at, resource.clone());
        }
    }
    let mut snapshot = Snapshot::default();
    for (type_url, list) in all {
        snapshot.insert_sorted(type_url, list);
    }
    snapshot
}

/// `new` with every resource that is unchanged since `old` (same name, same content) replaced by
/// the one in `old`: snapshots, and what each stream last sent, then compare by pointer.
fn reuse_unchanged(mut new: Typed, old: Option<&Typed>) -> Typed {
    let Some(old) = old else { return new };
    for (type_url, list) in new.iter_mut() {
        let Some(before) = old.get(type_url) else { continue };
        let mut before = before.iter().peekable();
        for resource in list.iter_mut() {
            while before.next_if(|b| b.name < resource.name).is_some() {}
            if let Some(same) = before.next_if(|b| b.name == resource.name)
                && **same == **resource
            {
                *resource = same.clone();
            }
        }
    }
    new
}

/// What a node's snapshot was last built from. A pass rebuilds only the nodes whose inputs
/// differ (or whose snapshot was dropped), so a proxy registering, refreshing or connecting
/// costs a build of its own snapshot, not of every proxy's.
#[derive(Debug, PartialEq)]
struct Inputs {
    config_version: String,
    /// Compared by value: a refresh stores an equal registration anew.
    registration: Arc<ProxyRegistration>,
    /// Hash of the cluster CA's certificates (none: no CA yet).
    ca: Option<u64>,
    /// Generation of the workload certificates coming due.
    certs_due: u64,
}

/// Whether a node is built in this pass. A node whose watch holds no snapshot is new, or was
/// replaced since its last build (a new credential ends its streams), whatever it was built from.
fn needs_build(last: Option<&Inputs>, now: &Inputs, has_snapshot: bool) -> bool {
    !has_snapshot || last != Some(now)
}

fn ca_key(ca: &mesh_identity::ClusterCa) -> u64 {
    let mut h = trellis_base::Fnv1a::new();
    h.write(ca.root_pem.as_bytes());
    h.write(ca.ca.cert_pem.as_bytes());
    h.finish()
}

pub async fn keep_snapshots_current(agent: Arc<Agent>, snapshots: Arc<ProxySnapshots>) {
    let mut config_changes = agent.config.subscribe();
    let mut registry_changes = agent.registry.changes.subscribe();
    let mut ca_changes = agent.mesh.subscribe();
    let mut certs_due = agent.certs.due.subscribe();
    let mut shared = SharedOutbound::default();
    let mut built: BTreeMap<String, Inputs> = BTreeMap::new();
    let mut last_version = String::new();
    loop {
        let config = config_changes.borrow_and_update().clone();
        registry_changes.borrow_and_update();
        let ca = ca_changes.borrow_and_update().as_deref().map(ca_key);
        let due = *certs_due.borrow_and_update();
        snapshots.drop_disconnected();
        let span = tracing::info_span!(
            "build_snapshots",
            config_version = tracing::field::Empty,
            built = tracing::field::Empty
        );
        let mut rebuilt = 0usize;
        if let Some(config) = config {
            span.record("config_version", config.version.as_str());
            // A new config continues the trace of its delivery; other passes (a proxy came, a
            // certificate fell due) are traces of their own.
            if config.version != last_version {
                last_version.clone_from(&config.version);
                if let Some(traceparent) = &config.traceparent {
                    trellis_support::trace_context::continue_trace(&span, traceparent);
                }
            }
            let _enter = span.enter();
            // The proxies' pushes and ACKs continue it (see trellis_xds::Snapshot::traceparent).
            let pass_trace = trellis_support::trace_context::traceparent(&span);
            let registrations = agent.registry.all_shared();
            let by_node = snapshots.by_node.lock().expect("snapshots lock");
            shared.retain(|node| by_node.contains_key(node));
            built.retain(|node, _| by_node.contains_key(node));
            for (node_id, sender) in by_node.iter() {
                // Unregistered (or expired) nodes keep what they have: Envoy serves on.
                let Some(registration) = registrations.get(node_id) else {
                    continue;
                };
                let inputs = Inputs {
                    config_version: config.version.clone(),
                    registration: registration.clone(),
                    ca,
                    certs_due: due,
                };
                if !needs_build(built.get(node_id), &inputs, sender.borrow().is_some()) {
                    continue;
                }
                let registration = &**registration;
                let Some(mut snapshot) = build(&agent, &config, node_id, registration, &mut shared) else {
                    continue;
                };
                snapshot.traceparent.clone_from(&pass_trace);
                rebuilt += 1;
                built.insert(node_id.clone(), inputs);
                snapshots
                    .built_from
                    .lock()
                    .expect("built_from lock")
                    .insert(node_id.clone(), config.version.clone());
                sender.send_if_modified(|current| {
                    if current.as_deref() == Some(&snapshot) {
                        return false;
                    }
                    *current = Some(Arc::new(snapshot));
                    true
                });
            }
        }
        span.record("built", rebuilt);
        drop(span);
        shared.settle();
        tokio::select! {
            result = config_changes.changed() => if result.is_err() { return },
            result = registry_changes.changed() => if result.is_err() { return },
            result = ca_changes.changed() => if result.is_err() { return },
            result = certs_due.changed() => if result.is_err() { return },
            _ = snapshots.new_node.notified() => {}
        }
    }
}

impl ProxySnapshots {
    /// Delivery state of every connected proxy, from the ADS status board (Envoy's ACKs/NACKs).
    pub fn states(&self, board: &trellis_xds::ProxyStatusBoard) -> Vec<trellis_model::ProxyState> {
        let built_from = self.built_from.lock().expect("built_from lock");
        // Reported every half second: summarized in place rather than copying every status.
        let mut states = board.summarize(|proxy| {
            let sent: Vec<_> = proxy.types.values().filter(|t| t.last_sent_version.is_some()).collect();
            let nack = proxy.types.values().find_map(|t| t.last_nack.clone());
            let in_sync =
                !sent.is_empty() && nack.is_none() && sent.iter().all(|t| t.last_acked_version == t.last_sent_version);
            trellis_model::ProxyState {
                config_version: built_from.get(&proxy.node_id).cloned().unwrap_or_default(),
                id: proxy.node_id.clone(),
                in_sync,
                nack,
                envoy_version: proxy.envoy_version.clone(),
            }
        });
        states.dedup_by(|a, b| a.id == b.id);
        states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_inputs(config_version: &str, address: &str, ca: Option<u64>, certs_due: u64) -> Inputs {
        let workload = trellis_model::Workload {
            name: "w".into(),
            namespace: "ns".into(),
            service: "svc".into(),
            service_account: "sa".into(),
            address: address.into(),
            ..Default::default()
        };
        Inputs {
            config_version: config_version.into(),
            registration: Arc::new(ProxyRegistration::Sidecar {
                workload,
                outbound_port: 15001,
                access_log: None,
            }),
            ca,
            certs_due,
        }
    }

    #[test]
    fn a_node_is_rebuilt_only_when_what_it_is_built_from_changed() {
        let last = mk_inputs("v1", "10.0.0.1", Some(1), 0);
        let cases = [
            ("nothing changed", mk_inputs("v1", "10.0.0.1", Some(1), 0), true, false),
            ("never built", mk_inputs("v1", "10.0.0.1", Some(1), 0), false, true),
            ("config", mk_inputs("v2", "10.0.0.1", Some(1), 0), true, true),
            ("registration", mk_inputs("v1", "10.0.0.2", Some(1), 0), true, true),
            ("cluster CA", mk_inputs("v1", "10.0.0.1", Some(2), 0), true, true),
            (
                "a certificate came due",
                mk_inputs("v1", "10.0.0.1", Some(1), 1),
                true,
                true,
            ),
        ];
        for (case, now, has_snapshot, expected) in cases {
            assert_eq!(needs_build(Some(&last), &now, has_snapshot), expected, "{case}");
        }
        assert!(needs_build(None, &last, true), "a node without a recorded build");
    }

    fn mk_typed(items: &[(&str, &str)]) -> Typed {
        let list = items
            .iter()
            .map(|(name, value)| {
                let any = envoy_types::pb::google::protobuf::Any {
                    type_url: trellis_xds::CLUSTER_TYPE.into(),
                    value: value.as_bytes().to_vec(),
                };
                Resource::new(name.to_string(), any)
            })
            .collect();
        Typed::from([(trellis_xds::CLUSTER_TYPE, list)])
    }

    #[test]
    fn a_rebuild_keeps_the_very_resources_that_did_not_change() {
        let old = mk_typed(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = reuse_unchanged(mk_typed(&[("a", "1"), ("b", "2"), ("bb", "1"), ("c", "1")]), Some(&old));
        let (old, new) = (&old[trellis_xds::CLUSTER_TYPE], &new[trellis_xds::CLUSTER_TYPE]);
        assert!(Arc::ptr_eq(&new[0], &old[0]), "a is unchanged");
        assert!(!Arc::ptr_eq(&new[1], &old[1]), "b changed");
        assert_eq!(new[1].any.value, b"2");
        assert_eq!(new[2].name, "bb");
        assert!(Arc::ptr_eq(&new[3], &old[2]), "c is unchanged");
    }

    #[test]
    fn a_snapshot_merges_own_resources_into_the_shared_ones_by_name() {
        let shared = mk_typed(&[("b", "1"), ("d", "1")]);
        let own = mk_typed(&[("a", "1"), ("c", "1"), ("e", "1")]);
        let snapshot = assemble(&own, Some(&shared));
        let names: Vec<_> = snapshot
            .of_type(trellis_xds::CLUSTER_TYPE)
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn sidecars_share_an_outbound_build_unless_a_route_table_selects_one_of_them() {
        use trellis_model::ir::{ClientSelector, VirtualHost};
        let host = |name: &str, clients: Option<Vec<ClientSelector>>| {
            Arc::new(VirtualHost {
                name: name.into(),
                domains: vec!["reviews.shop:9080".into()],
                clients,
                ..Default::default()
            })
        };
        let frontend = ClientSelector {
            labels: BTreeMap::from([("app".to_string(), "frontend".to_string())]),
            ..Default::default()
        };
        let config = AppliedConfig {
            version: "v1".into(),
            traceparent: None,
            config: trellis_model::ClusterConfig {
                cluster: "cluster-1".into(),
                virtual_hosts: vec![host("reviews", None), host("reviews@v2", Some(vec![frontend]))],
                ..Default::default()
            },
        };
        let workload = |app: &str, name: &str| trellis_model::Workload {
            name: name.into(),
            namespace: "shop".into(),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ..Default::default()
        };
        let mut shared = SharedOutbound::default();
        let a = shared.get(&config, &workload("ratings", "a"));
        let b = shared.get(&config, &workload("ratings", "b"));
        let selected = shared.get(&config, &workload("frontend", "c"));
        assert!(Arc::ptr_eq(&a, &b), "unselected sidecars share one build");
        assert!(!Arc::ptr_eq(&a, &selected), "the selected one has its own routes");
        assert_ne!(a[trellis_xds::ROUTE_TYPE], selected[trellis_xds::ROUTE_TYPE]);
        assert_eq!(shared.by_view.len(), 2);
    }

    #[test]
    fn shared_lists_are_sorted_by_name() {
        let mut resources = trellis_envoy::ProxyResources::default();
        for name in ["c", "a", "b"] {
            resources
                .clusters
                .push(envoy_types::pb::envoy::config::cluster::v3::Cluster {
                    name: name.into(),
                    ..Default::default()
                });
        }
        let typed = typed(resources);
        let names: Vec<_> = typed[trellis_xds::CLUSTER_TYPE]
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }
}
