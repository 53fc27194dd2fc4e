//! Turns the mesh IR ([`trellis_model::ClusterConfig`]) plus one proxy's identity into the Envoy
//! v3 resources that proxy must hold, and writes the bootstrap that points Envoy at us over ADS.
//!
//! ```text
//!  ClusterConfig ──sidecar()──────────▶ ProxyResources ──into_typed()──▶ (type_url, name, Any) ──▶ ADS
//!                ├─east_west_gateway()─▶ ProxyResources
//!                └─ingress_gateway()───▶ ProxyResources
//!  PEM cert, key, root ──secrets()─────▶ ProxyResources.secrets (SDS: `default`, `ROOTCA`)
//!  BootstrapSpec ──bootstrap()────────▶ JSON for `envoy -c bootstrap.json`
//!  ProxyResources + TraceSpec ──with_tracing()──▶ every HCM traces to the OTLP collector
//! ```
//!
//! The HTTP listeners of a sidecar or an ingress gateway carry the access logs
//! (AccessLogPolicies) that select the proxy, written where the proxy's spec says (`access_log`).
//!
//! All mesh traffic is mTLS between sidecars with SPIFFE identities: the client sidecar sends the
//! upstream's key as SNI and checks the server's identity; east-west gateways route on that SNI
//! without terminating TLS.
//!
//! Everything here is pure: no I/O, no clock, and output order follows the IR's (already sorted)
//! order, so equal inputs give byte-identical resources and the xDS server can version by content.
//! (`envoy-types` always brings tonic and tokio along for its service stubs; this crate uses only
//! its message types.)

mod access_log;
mod addons;
mod authz;
mod bootstrap;
mod common;
mod gateway;
mod http_policies;
mod ingress;
mod jwt_claims;
mod pack;
mod routes;
mod sidecar;
mod tls;
mod trace;
mod transformation;
mod upstream_traffic;

pub use access_log::ACCESS_LOG_OTLP_CLUSTER;
pub use authz::{RBAC_DRY_RUN_STAT_PREFIX, RbacStats};
pub use bootstrap::{
    BootstrapSpec, XDS_CLIENT_SECRET, XDS_CLUSTER, XDS_SERVER_SECRET, XdsTls, bootstrap,
    bootstrap_with_client_certificate, xds_client_certificate_secret, xds_server_validation_secret,
};
pub use gateway::{GATEWAY_LISTENER, GatewaySpec, east_west_gateway};
pub use http_policies::listener_inputs as sidecar_listener_route_inputs;
pub use ingress::{IngressSpec, ingress_gateway, ingress_name};
pub use pack::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE};
pub use sidecar::{
    OUTBOUND_LISTENER, OUTBOUND_ROUTE, OutboundView, SidecarSpec, inbound_name, outbound_view, overriding_hosts,
    sidecar, sidecar_local, sidecar_outbound, sidecar_workspace,
};
pub use tls::{ROOT_CA_SECRET, SYSTEM_CA_SECRET, WORKLOAD_SECRET, secrets, system_ca_secret, uses_system_ca};
pub use trace::{OTLP_COLLECTOR_CLUSTER, TraceSpec, with_tracing};

use envoy_types::pb::envoy::config::{
    cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener, route::v3::RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

/// Every xDS resource one proxy needs, by type, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyResources {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    /// Filled by whoever holds the proxy's certificate (with [`secrets()`]); `sidecar()` and
    /// `east_west_gateway()` leave it empty, `ingress_gateway()` holds its listeners' Secrets.
    pub secrets: Vec<Secret>,
}

#[cfg(test)]
mod testing;
