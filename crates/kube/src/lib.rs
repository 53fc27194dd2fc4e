//! Trellis on a Kubernetes management cluster: the Gloo kinds as CustomResourceDefinitions
//! ([`crds`], pure) and the management server's sync of those resources into its store, with
//! their status written back ([`sync`], on kube-rs).

pub mod crds;
pub mod sync;
