//! `networking.gloo.solo.io/v2` VirtualGateway: an ingress gateway's listeners; RouteTables bind
//! their routes to it with `virtualGateways`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::ObjectSelector;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewaySpec {
    /// The gateway proxies: `trellis gateway ingress --labels ...` registrations with these labels.
    #[serde(default)]
    pub workloads: Vec<GatewayWorkload>,
    #[serde(default)]
    pub listeners: Vec<GatewayListener>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayWorkload {
    #[serde(default)]
    pub selector: ObjectSelector,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_route_tables: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    pub number: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTls {
    /// SIMPLE (server TLS) or MUTUAL (client certificates required too).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Certificate files on the gateway's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<TlsFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_subject_alt_name: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_chain: String,
    pub private_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<String>,
}
