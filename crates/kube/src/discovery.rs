//! An agent's discovery from its Kubernetes cluster: Services, their EndpointSlices and the Pods
//! behind them, watched (not polled), become the cluster's workloads. A pod that is not ready
//! is not a workload; scaling a Service (its EndpointSlices change) changes the workloads.
//! The Nodes those pods run on give the cluster its locality (their topology labels).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use trellis_model::{Locality, Protocol, Workload, WorkloadPort};

/// The label an EndpointSlice names its Service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port's protocol, from its `appProtocol` or, as Istio reads them, its name's prefix.
fn protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    let hint = app_protocol.unwrap_or(name).to_ascii_lowercase();
    let prefix = hint.split(['-', '_']).next().unwrap_or_default();
    match prefix {
        "grpc" => Protocol::Grpc,
        "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

/// The workloads of a cluster: one per ready endpoint of each Service's EndpointSlices, with its
/// Pod's labels and service account. Pure, so it is tested without a cluster.
pub fn workloads(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], pods: &[Arc<Pod>]) -> Vec<Workload> {
    let services: BTreeMap<(String, String), &Service> = services
        .iter()
        .map(|s| ((namespace_of(&s.metadata), name_of(&s.metadata)), s.as_ref()))
        .collect();
    let pods: BTreeMap<(String, String), &Pod> = pods
        .iter()
        .map(|p| ((namespace_of(&p.metadata), name_of(&p.metadata)), p.as_ref()))
        .collect();
    let mut workloads: Vec<Workload> = Vec::new();
    let mut names: HashSet<(String, String)> = HashSet::new();
    for slice in slices {
        let namespace = namespace_of(&slice.metadata);
        let Some(service_name) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        let Some(service) = services.get(&(namespace.clone(), service_name.clone())) else {
            continue;
        };
        let service_ports = service.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
        let ports: Vec<WorkloadPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                let name = port.name.clone().unwrap_or_default();
                let target = u16::try_from(port.port?).ok()?;
                let service_port = service_ports
                    .iter()
                    .find(|p| p.name.clone().unwrap_or_default() == name)?;
                Some(WorkloadPort {
                    protocol: protocol(
                        &name,
                        service_port.app_protocol.as_deref().or(port.app_protocol.as_deref()),
                    ),
                    name,
                    port: u16::try_from(service_port.port).ok()?,
                    inbound_port: target,
                    app_port: target,
                })
            })
            .collect();
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            if !ready {
                continue;
            }
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    pods.get(&(
                        r.namespace.clone().unwrap_or(namespace.clone()),
                        r.name.clone().unwrap_or_default(),
                    ))
                });
            let pod_name = pod
                .map(|p| name_of(&p.metadata))
                .unwrap_or_else(|| format!("{service_name}-{}", address.replace([':', '.'], "-")));
            // A pod behind several Services is one workload per Service.
            let name = if names.insert((namespace.clone(), pod_name.clone())) {
                pod_name
            } else {
                format!("{pod_name}.{service_name}")
            };
            workloads.push(Workload {
                name,
                namespace: namespace.clone(),
                service: service_name.clone(),
                labels: pod
                    .and_then(|p| p.metadata.labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                service_account: pod
                    .and_then(|p| p.spec.as_ref()?.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
                address: address.clone(),
                ports: ports.clone(),
            });
        }
    }
    workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    workloads
}

fn namespace_of(metadata: &kube::api::ObjectMeta) -> String {
    metadata.namespace.clone().unwrap_or_default()
}

fn name_of(metadata: &kube::api::ObjectMeta) -> String {
    metadata.name.clone().unwrap_or_default()
}

/// The topology labels a Node's locality is read from, newest first, as Kubernetes and Istio
/// name them (the `failure-domain.beta` ones are what older clusters still set).
const REGION_LABELS: [&str; 2] = [
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];
const ZONE_LABELS: [&str; 2] = ["topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"];
const SUB_ZONE_LABELS: [&str; 1] = ["topology.istio.io/subzone"];

/// What one look at the cluster found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesView {
    pub workloads: Vec<Workload>,
    /// From the topology labels of the nodes the workloads run on; None when they carry none.
    pub locality: Option<Locality>,
}

/// The cluster's locality, from the topology labels of the nodes its pods run on (every node
/// when no pod names one). Trellis places a whole cluster in one locality: the region most of
/// those nodes are in (the first by name on a tie), and a zone and sub-zone only when all of
/// that region's nodes share them; a cluster spread over zones is the region alone.
pub fn cluster_locality(nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Option<Locality> {
    let hosting: HashSet<&str> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .collect();
    let considered: Vec<&Node> = match nodes.iter().any(|n| hosting.contains(name_of(&n.metadata).as_str())) {
        true => nodes
            .iter()
            .filter(|n| hosting.contains(name_of(&n.metadata).as_str()))
            .map(Arc::as_ref)
            .collect(),
        false => nodes.iter().map(Arc::as_ref).collect(),
    };
    let label = |node: &Node, names: &[&str]| -> Option<String> {
        let labels = node.metadata.labels.as_ref()?;
        names
            .iter()
            .find_map(|name| labels.get(*name))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let mut regions: BTreeMap<String, usize> = BTreeMap::new();
    for node in &considered {
        if let Some(region) = label(node, &REGION_LABELS) {
            *regions.entry(region).or_default() += 1;
        }
    }
    let most = regions.values().copied().max()?;
    let region = regions.into_iter().find(|(_, count)| *count == most)?.0;
    let in_region: Vec<&Node> = considered
        .into_iter()
        .filter(|n| label(n, &REGION_LABELS).as_deref() == Some(region.as_str()))
        .collect();
    let shared = |names: &[&str]| -> String {
        let values: HashSet<Option<String>> = in_region.iter().map(|n| label(n, names)).collect();
        match values.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(value)] => value.clone(),
            _ => String::new(),
        }
    };
    let zone = shared(&ZONE_LABELS);
    let sub_zone = if zone.is_empty() {
        String::new()
    } else {
        shared(&SUB_ZONE_LABELS)
    };
    Some(Locality { region, zone, sub_zone })
}

/// Watches the cluster and calls `publish` with what it finds after every change (changes
/// arriving together are taken at once), until the process ends.
pub async fn run(client: Client, publish: impl Fn(KubernetesView) + Send + 'static) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let all = watcher::Config::default;
    let services = reflect::<Service>(Api::all(client.clone()), all(), changed.clone());
    let slices = reflect::<EndpointSlice>(Api::all(client.clone()), all(), changed.clone());
    let pods = reflect::<Pod>(Api::all(client.clone()), all(), changed.clone());
    let nodes = reflect::<Node>(Api::all(client), all(), changed.clone());
    // Nothing is published before all four have been listed once: a partial view would drop
    // workloads that exist.
    let _ = (
        services.0.wait_until_ready().await,
        slices.0.wait_until_ready().await,
        pods.0.wait_until_ready().await,
        nodes.0.wait_until_ready().await,
    );
    let mut last = None;
    loop {
        let pods_now = pods.0.state();
        let now = KubernetesView {
            workloads: workloads(&services.0.state(), &slices.0.state(), &pods_now),
            locality: cluster_locality(&nodes.0.state(), &pods_now),
        };
        if last.as_ref() != Some(&now) {
            tracing::info!(workloads = now.workloads.len(), locality = ?now.locality, "Kubernetes discovery");
            publish(now.clone());
            last = Some(now);
        }
        changed.notified().await;
        // Gather what arrives together (a rollout changes slices and pods at once).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reflector of the objects of `K` that `config` selects, notifying `changed` on each event.
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<tokio::sync::Notify>,
) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(kind = %K::kind(&()), %error, "watching Kubernetes discovery");
            }
            changed.notify_one();
        }
    });
    (reader, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn ready_endpoints_become_workloads_with_their_pods_labels_and_service_account() {
        let service: Arc<Service> = from(json!({
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"ports": [{"name": "http", "port": 9080}, {"name": "grpc-admin", "port": 9090}]},
        }));
        let slice: Arc<EndpointSlice> = from(json!({
            "metadata": {"name": "reviews-abc", "namespace": "bookinfo", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 19080}, {"name": "grpc-admin", "port": 19090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "reviews-v1-x", "namespace": "bookinfo"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "reviews-v2-y", "namespace": "bookinfo"}},
            ],
        }));
        let pod: Arc<Pod> = from(json!({
            "metadata": {"name": "reviews-v1-x", "namespace": "bookinfo", "labels": {"app": "reviews", "version": "v1"}},
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": [{"name": "app"}]},
        }));
        let found = workloads(&[service], &[slice], &[pod]);
        assert_eq!(found.len(), 1, "the unready endpoint is left out: {found:?}");
        let reviews = &found[0];
        assert_eq!(
            (reviews.name.as_str(), reviews.service.as_str()),
            ("reviews-v1-x", "reviews")
        );
        assert_eq!(reviews.service_account, "bookinfo-reviews");
        assert_eq!(reviews.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(reviews.address, "10.0.0.1");
        assert_eq!(reviews.ports[0].port, 9080);
        assert_eq!(reviews.ports[0].inbound_port, 19080);
        assert_eq!(reviews.ports[1].protocol, Protocol::Grpc);
    }

    #[test]
    fn a_slice_without_its_service_is_not_discovered() {
        let slice: Arc<EndpointSlice> = from(json!({
            "metadata": {"name": "orphan", "namespace": "x", "labels": {"kubernetes.io/service-name": "gone"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.9"]}],
        }));
        assert!(workloads(&[], &[slice], &[]).is_empty());
    }

    fn node(name: &str, labels: serde_json::Value) -> Arc<Node> {
        from(json!({"metadata": {"name": name, "labels": labels}}))
    }

    fn pod_on(node: &str) -> Arc<Pod> {
        from(json!({"metadata": {"name": format!("on-{node}")}, "spec": {"nodeName": node, "containers": []}}))
    }

    #[test]
    fn a_cluster_is_in_the_region_and_zone_its_pods_nodes_share() {
        let nodes = [
            node(
                "a",
                json!({"topology.kubernetes.io/region": "us-east", "topology.kubernetes.io/zone": "us-east-1a", "topology.istio.io/subzone": "rack-1"}),
            ),
            node(
                "b",
                json!({"topology.kubernetes.io/region": "us-east", "topology.kubernetes.io/zone": "us-east-1a", "topology.istio.io/subzone": "rack-1"}),
            ),
            // No pod runs here: its region does not count.
            node("idle", json!({"topology.kubernetes.io/region": "eu-west"})),
        ];
        let pods = [pod_on("a"), pod_on("b")];
        assert_eq!(
            cluster_locality(&nodes, &pods),
            Some(Locality {
                region: "us-east".into(),
                zone: "us-east-1a".into(),
                sub_zone: "rack-1".into()
            })
        );
    }

    #[test]
    fn nodes_in_several_zones_give_the_region_alone_and_old_labels_still_count() {
        let nodes = [
            node(
                "a",
                json!({"failure-domain.beta.kubernetes.io/region": "us-east", "failure-domain.beta.kubernetes.io/zone": "us-east-1a"}),
            ),
            node(
                "b",
                json!({"topology.kubernetes.io/region": "us-east", "topology.kubernetes.io/zone": "us-east-1b"}),
            ),
            node(
                "c",
                json!({"topology.kubernetes.io/region": "eu-west", "topology.kubernetes.io/zone": "eu-west-1a"}),
            ),
        ];
        // No pod names a node: every node counts, and us-east has two of three.
        let locality = cluster_locality(&nodes, &[]).unwrap();
        assert_eq!((locality.region.as_str(), locality.zone.as_str()), ("us-east", ""));
    }

    #[test]
    fn nodes_without_topology_labels_give_no_locality() {
        assert_eq!(
            cluster_locality(&[node("a", json!({"kubernetes.io/os": "linux"}))], &[pod_on("a")]),
            None
        );
        assert_eq!(cluster_locality(&[], &[]), None);
    }
}
