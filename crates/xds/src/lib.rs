//! Aggregated discovery service (ADS: state of the world, and delta) for Trellis.
//!
//! Envoy proxies open one bidirectional gRPC stream each; this crate answers
//! them from a per-proxy [`Snapshot`] supplied by a [`SnapshotSource`].
//!
//! ```text
//!  SnapshotSource ──watch<Option<Arc<Snapshot>>>──┐
//!                                                 ▼
//!  Envoy ──DiscoveryRequest──▶ server.rs ──▶ stream.rs (pure state machine; delta.rs for delta xDS)
//!        ◀─DiscoveryResponse──     │               │ outcomes
//!                                  ├──▶ metrics.rs (pushes, NACKs, connected)
//!                                  └──▶ status.rs  (per-proxy sent/acked/NACK)
//! ```
//!
//! The protocol logic lives in [`StreamState`], which knows nothing about gRPC
//! or tasks, so every ACK/NACK/stale-nonce rule is unit-tested by feeding it
//! requests and snapshots. [`AdsServer`] is the thin I/O shell around it, and
//! `grpc.rs` the gRPC service in front of that, which frames each response in a
//! buffer of its own size (tonic's generated server kept one per stream, as large
//! as the largest response it ever sent).

mod delta;
mod grpc;
mod metrics;
mod server;
mod snapshot;
mod status;
mod stream;

pub use delta::DeltaState;
pub use grpc::AdsService;
pub use metrics::XdsMetrics;
pub use server::{AdsServer, SnapshotSource, StreamPeer};
pub use snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Resource, SECRET_TYPE, Snapshot};
pub use status::{ProxyStatus, ProxyStatusBoard, TypeStatus};
pub use stream::{Outcome, StreamState};
