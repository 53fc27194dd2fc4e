//! `networking.gloo.solo.io/v2` VirtualGateway: an ingress (or egress) gateway's listeners;
//! RouteTables bind their routes to it with `virtualGateways`.
//!
//! Field names follow Gloo Mesh 2.x's `networking/v2/virtual_gateway.proto`, as its API reference
//! shows them: https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/virtual_gateway/

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::ObjectSelector;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewaySpec {
    /// The gateway proxies: `trellis gateway ingress --labels ...` registrations with these labels.
    #[serde(default)]
    pub workloads: Vec<GatewayWorkload>,
    #[serde(default)]
    pub listeners: Vec<GatewayListener>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayWorkload {
    #[serde(default)]
    pub selector: ObjectSelector,
    /// Gloo's `KUBE` (the default) or `VM`; Trellis gateways are `trellis gateway ingress`
    /// proxies, whatever runs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Gloo's workload port selector; not used (listeners name their ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayListener {
    pub port: GatewayPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// Which RouteTables bound to the gateway this listener serves (any entry admits); none
    /// listed: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_route_tables: Vec<AllowedRouteTables>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Egress gateways: which of the ExternalServices routed through this gateway
    /// (`egressGatewayRoutes`) the listener serves; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_external_services: Vec<ExternalServiceFilter>,
}

/// One `allowedRouteTables` entry of a listener: a RouteTable is admitted when one of its hosts matches
/// `host` (exact, or `*.` wildcard, `*` any; none given: any) and the table matches `selector`
/// (labels, name, namespace, workspace; none given: any).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRouteTables {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ObjectSelector>,
}

/// Gloo's `Listener.ExternalServiceFilter`: `host` is `[namespace/]dnsName`, the namespace `*`
/// (any, the default) or `.` (the VirtualGateway's), the name's first label may be `*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceFilter {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<ObjectSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub number: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTls {
    /// SIMPLE (server TLS; the default), MUTUAL (client certificates required too),
    /// ISTIO_MUTUAL (mesh mTLS: the client must be a mesh proxy), PASSTHROUGH (TLS is not
    /// terminated; RouteTable `tls` routes pick a destination by SNI) or AUTO_PASSTHROUGH.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Certificate files on the gateway's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<TlsFiles>,
    /// A Kubernetes TLS Secret (`tls.crt`, `tls.key`, and `ca.crt` for MUTUAL) in the
    /// VirtualGateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_name: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// Gloo's `serverCert`; Trellis's earlier name `certChain` is still read.
    #[serde(default, alias = "certChain", skip_serializing_if = "String::is_empty")]
    pub server_cert: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// Gloo's `caCerts`: what MUTUAL client certificates must chain to (`rootCa` still read).
    #[serde(default, alias = "rootCa", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
}

/// The TLS modes Gloo's VirtualGateway listeners take.
pub const GATEWAY_TLS_MODES: [&str; 5] = ["SIMPLE", "MUTUAL", "ISTIO_MUTUAL", "PASSTHROUGH", "AUTO_PASSTHROUGH"];

impl GatewayTls {
    /// SIMPLE when left out, as in Gloo.
    pub fn effective_mode(&self) -> &str {
        if self.mode.is_empty() { "SIMPLE" } else { &self.mode }
    }

    /// The modes that terminate TLS with a certificate of the listener's own (files or Secret).
    pub fn needs_certificate(&self) -> bool {
        matches!(self.effective_mode(), "SIMPLE" | "MUTUAL")
    }
}
