//! `networking.gloo.solo.io/v2` ExternalService and ExternalEndpoint: destinations outside the
//! mesh that workloads may reach.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServiceSpec {
    /// Host names (a left-most `*.` wildcard is allowed in Gloo; Trellis serves exact names).
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ExternalServicePort>,
    /// Labels of the ExternalEndpoints that back it; none selected: the host is resolved by DNS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalServicePort {
    pub number: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clientside_tls: Option<ClientsideTls>,
    /// Send this port's traffic through egress gateways: clients address `portMatch`, the
    /// gateways originate to `number` (with `clientsideTls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gateway_routes: Option<EgressGatewayRoutes>,
}

/// Gloo's `ExternalService.Port.EgressGatewayRoutes`
/// (solo-apis `networking/v2/external_service.proto`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewayRoutes {
    /// The port clients in the mesh send to; 80 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_match: Option<u32>,
    /// The egress VirtualGateways (namespace: the ExternalService's when empty); traffic is
    /// balanced across the gateway proxies they select.
    #[serde(default)]
    pub virtual_gateway_refs: Vec<crate::common::ObjectReference>,
}

impl EgressGatewayRoutes {
    pub fn effective_port_match(&self) -> u32 {
        self.port_match.unwrap_or(80)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientsideTls {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// SIMPLE (originate TLS), MUTUAL (and present a client certificate) or DISABLE.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// A PEM file of CAs on the proxy's host; the system store when neither this nor
    /// `credentialName` gives CAs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// MUTUAL: files on the proxy's host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    /// A Secret of the ExternalService's namespace: `ca.crt`, and for MUTUAL `tls.crt` and `tls.key`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    /// Names the server's certificate must carry (one of them); else the SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEndpointSpec {
    pub address: String,
    #[serde(default)]
    pub ports: Vec<ExternalEndpointPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub number: u32,
}
