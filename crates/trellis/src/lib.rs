//! The `trellis` binary's library: each role is a module with a `run` function; `main.rs` only
//! parses flags and dispatches. Wiring and I/O live here; the logic lives in the pure crates.
//!
//! ```text
//!  mgmt     store + PKI + translator + relay server (mTLS) + REST API + metrics
//!  agent    relay client + workload registry + cluster CA + ADS/SDS server for its cluster's Envoys
//!  proxy    registers a workload with its agent and runs Envoy as its sidecar
//!  gateway  east-west (SNI passthrough) or ingress (VirtualGateways): a registration plus an Envoy
//!  client   apply/get/describe/delete; cluster_cli: cluster register/deregister/list and check
//!  up       the whole local mesh with a demo app, for trying Trellis in one command
//! ```

pub mod access_cli;
pub mod addon_client;
pub mod agent;
pub mod api_client;
pub mod cli;
pub mod cli_config;
pub mod client;
pub mod cluster_cli;
pub mod demo_app;
pub mod extauth;
pub mod gateway;
pub mod mgmt;
pub mod proxy;
pub mod ratelimit;
pub mod up;
