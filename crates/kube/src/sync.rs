//! The management server on a Kubernetes management cluster: Gloo resources applied with
//! `kubectl apply` are watched (not polled), parsed by Trellis's own parser and written to the
//! store; each one's status subresource is written back from the translation (state, message,
//! observedGeneration, where it applies). A resource that does not parse gets state INVALID and
//! the last good version stays in force: a bad edit loses nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::{Value, json};
use trellis_api::{Kind, Resource, ResourceKey};
use trellis_store::Store;

use crate::crds::gloo_kinds;

/// Marks store resources that mirror a Kubernetes object: only those are deleted when the
/// object goes.
pub const SOURCE_ANNOTATION: &str = "trellis.io/source";
/// The Kubernetes object's `metadata.generation`, for its status's `observedGeneration`.
pub const GENERATION_ANNOTATION: &str = "trellis.io/kubernetes-generation";
const SOURCE: &str = "kubernetes";
/// kubectl's copy of the whole object: not part of what the user configured.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the translation says of a resource: its status as the API shows it, and the revision
/// translated (statuses change only when it does).
pub trait StatusSource: Send + Sync + 'static {
    fn revision(&self) -> u64;
    fn status(&self, key: &ResourceKey) -> Option<Value>;
}

/// A client from a kubeconfig file, or the pod's in-cluster configuration without one.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read --kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::incluster()?,
    };
    Ok(Client::try_from(config)?)
}

fn api_resource(kind: Kind) -> ApiResource {
    let (group, version) = kind.api_version().rsplit_once('/').expect("Gloo kinds have a group");
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind.as_str()), kind.plural())
}

/// The document `trellis apply` would read for a Kubernetes object of `kind`, and its source
/// name for error messages.
pub(crate) fn to_resource_document(
    kind: Kind,
    name: &str,
    namespace: &str,
    labels: &Value,
    spec: Value,
) -> (String, Value) {
    let document = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.as_str(),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": if labels.is_object() { labels.clone() } else { json!({}) },
        },
        "spec": if spec.is_null() { json!({}) } else { spec },
    });
    (format!("kubernetes {kind}/{namespace}/{name}"), document)
}

/// A Kubernetes object as the resource `trellis apply` would read, marked as mirrored.
fn to_resource(kind: Kind, object: &DynamicObject) -> Result<Resource, String> {
    let mut annotations: BTreeMap<String, String> = object.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(LAST_APPLIED);
    annotations.insert(SOURCE_ANNOTATION.into(), SOURCE.into());
    annotations.insert(
        GENERATION_ANNOTATION.into(),
        object.metadata.generation.unwrap_or(0).to_string(),
    );
    let (source, mut document) = to_resource_document(
        kind,
        object.metadata.name.as_deref().unwrap_or_default(),
        object.metadata.namespace.as_deref().unwrap_or_default(),
        &json!(object.metadata.labels.clone().unwrap_or_default()),
        object.data.get("spec").cloned().unwrap_or(Value::Null),
    );
    document["metadata"]["annotations"] = json!(annotations);
    trellis_api::parse_one(&source, &document.to_string()).map_err(|e| e.to_string())
}

pub(crate) fn from_kubernetes(resource: &Resource) -> bool {
    resource.metadata.annotations.get(SOURCE_ANNOTATION).map(String::as_str) == Some(SOURCE)
}

/// Mirrors every Gloo kind of the cluster into `store` and writes statuses back while
/// `leading` (one replica writes them), until the process ends.
pub async fn run(
    client: Client,
    store: Arc<dyn Store>,
    statuses: Arc<dyn StatusSource>,
    leading: tokio::sync::watch::Receiver<bool>,
) {
    let written: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    for kind in gloo_kinds() {
        tokio::spawn(watch_kind(
            client.clone(),
            store.clone(),
            kind,
            written.clone(),
            leading.clone(),
        ));
    }
    write_statuses(client, store, statuses, written, leading).await;
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("store call")
}

async fn watch_kind(
    client: Client,
    store: Arc<dyn Store>,
    kind: Kind,
    written: Arc<Mutex<HashMap<String, Value>>>,
    leading: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &api_resource(kind));
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff());
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                // The watcher backs off and lists again; most often the CRD is not installed.
                tracing::warn!(%kind, %error, "watching Kubernetes resources");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(object) | Event::Apply(object) => {
                let key = format!(
                    "{kind}/{}/{}",
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default()
                );
                listed.insert(key.clone());
                match to_resource(kind, &object) {
                    Ok(resource) => {
                        let store = store.clone();
                        if let Err(error) = blocking(move || store.apply(vec![resource])).await {
                            tracing::error!(%error, %key, "cannot store a Kubernetes resource");
                        }
                    }
                    Err(message) => {
                        tracing::warn!(%key, %message, "a Kubernetes resource does not parse; its last good version stays");
                        let status = json!({
                            "state": "INVALID",
                            "message": message,
                            "observedGeneration": object.metadata.generation.unwrap_or(0),
                        });
                        if *leading.borrow() {
                            write_status(&api, &object, status.clone()).await;
                            written.lock().expect("statuses lock").insert(key, status);
                        }
                    }
                }
            }
            Event::InitDone => {
                // Objects deleted while no watch ran: what the store mirrors and the list lacks.
                let store = store.clone();
                let gone = listed.clone();
                let result = blocking(move || {
                    let stale: Vec<ResourceKey> = store
                        .list()?
                        .into_iter()
                        .filter(|r| r.kind() == kind && from_kubernetes(r) && !gone.contains(&r.key().to_string()))
                        .map(|r| r.key())
                        .collect();
                    store.delete(&stale)
                })
                .await;
                if let Err(error) = result {
                    tracing::error!(%error, %kind, "cannot remove resources deleted from Kubernetes");
                }
            }
            Event::Delete(object) => {
                let key = ResourceKey::new(
                    kind,
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                written.lock().expect("statuses lock").remove(&key.to_string());
                let store = store.clone();
                let result = blocking(move || match store.get(&key)? {
                    Some(resource) if from_kubernetes(&resource) => store.delete(&[key]).map(|_| ()),
                    _ => Ok(()),
                })
                .await;
                if let Err(error) = result {
                    tracing::error!(%error, %kind, "cannot remove a resource deleted from Kubernetes");
                }
            }
        }
    }
}

async fn write_status(api: &Api<DynamicObject>, object: &DynamicObject, status: Value) {
    let (Some(name), Some(namespace)) = (&object.metadata.name, &object.metadata.namespace) else {
        return;
    };
    let api: Api<DynamicObject> = Api::namespaced_with(api.clone().into_client(), namespace, &api_resource_of(object));
    if let Err(error) = api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
    {
        tracing::warn!(%error, %name, %namespace, "cannot write a Kubernetes resource's status");
    }
}

fn api_resource_of(object: &DynamicObject) -> ApiResource {
    let types = object.types.clone().unwrap_or_default();
    let kind = Kind::parse_loose(&types.kind).expect("objects come from a Gloo kind's watch");
    api_resource(kind)
}

/// After each translation, the status of every resource mirrored from Kubernetes whose status
/// changed goes to its object's status subresource.
async fn write_statuses(
    client: Client,
    store: Arc<dyn Store>,
    statuses: Arc<dyn StatusSource>,
    written: Arc<Mutex<HashMap<String, Value>>>,
    leading: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_revision = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !*leading.borrow() {
            // A new leader writes every status it finds different from what it wrote.
            last_revision = None;
            continue;
        }
        let revision = statuses.revision();
        if last_revision == Some(revision) {
            continue;
        }
        let reader = store.clone();
        let Ok(Ok(resources)) = tokio::task::spawn_blocking(move || reader.list()).await else {
            continue;
        };
        let mut all_written = true;
        for resource in resources.iter().filter(|r| from_kubernetes(r)) {
            let key = resource.key();
            let Some(mut status) = statuses.status(&key) else {
                all_written = false;
                continue;
            };
            let generation: i64 = resource
                .metadata
                .annotations
                .get(GENERATION_ANNOTATION)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            // The status speaks of the store's generation; Kubernetes users read their object's.
            if status["observedGeneration"].as_u64() == Some(resource.metadata.generation) {
                status["observedGeneration"] = json!(generation);
            } else {
                all_written = false;
                continue;
            }
            let name = key.to_string();
            if written.lock().expect("statuses lock").get(&name) == Some(&status) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &resource.metadata.namespace,
                &api_resource(resource.kind()),
            );
            match api
                .patch_status(
                    &resource.metadata.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
            {
                Ok(_) => {
                    written.lock().expect("statuses lock").insert(name, status);
                }
                Err(error) => {
                    all_written = false;
                    tracing::warn!(%error, resource = %name, "cannot write a Kubernetes resource's status");
                }
            }
        }
        if all_written {
            last_revision = Some(revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: Value) -> DynamicObject {
        let mut object = DynamicObject::new("reviews", &api_resource(Kind::RouteTable)).within("bookinfo");
        object.metadata.generation = Some(7);
        object.metadata.annotations = Some(BTreeMap::from([(LAST_APPLIED.to_string(), "{...}".to_string())]));
        object.data = json!({ "spec": spec });
        object
    }

    #[test]
    fn a_kubernetes_object_becomes_the_resource_trellis_apply_reads() {
        let resource = to_resource(
            Kind::RouteTable,
            &object(json!({"hosts": ["reviews.bookinfo.svc.cluster.local"], "http": [{"name": "r", "forwardTo": {"destinations": [{"ref": {"name": "reviews"}}]}}]})),
        )
        .unwrap();
        assert_eq!(resource.key().to_string(), "RouteTable/bookinfo/reviews");
        assert_eq!(resource.metadata.annotations.get(GENERATION_ANNOTATION).unwrap(), "7");
        assert!(from_kubernetes(&resource));
        assert!(!resource.metadata.annotations.contains_key(LAST_APPLIED));
    }

    #[test]
    fn a_typo_is_refused_with_its_field_path() {
        let error = to_resource(Kind::RouteTable, &object(json!({"hostz": ["x"]}))).unwrap_err();
        assert!(error.contains("hostz"), "{error}");
        assert!(error.contains("RouteTable/bookinfo/reviews"), "{error}");
    }
}
