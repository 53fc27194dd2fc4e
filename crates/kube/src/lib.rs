//! Trellis on Kubernetes: an agent's discovery of Services, EndpointSlices and Pods
//! ([`discovery`]); on the management cluster, the Gloo kinds as CustomResourceDefinitions
//! ([`crds`], pure) and the management server's sync of those resources into its store, with
//! their status written back ([`sync`], on kube-rs), and the validating webhook's answer
//! ([`admission`], pure) and the sidecar injector's ([`injection`], pure); the agent's CA
//! published for injected sidecars ([`ca_publish`]); the Secrets beside Gloo resources, mirrored
//! ([`secrets`]); the management plane's store on the API server, for replicas without an etcd
//! ([`store`]).

pub mod admission;
pub mod ca_publish;
pub mod crd_schema;
pub mod crds;
pub mod discovery;
pub mod injection;
pub mod lease;
pub mod pod_identity;
pub mod secrets;
pub mod store;
pub mod sync;
