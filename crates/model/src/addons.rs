//! Add-on parts of the mesh IR: which ext-auth and rate-limit servers a cluster's proxies call,
//! what each route asks of them, and the configuration the add-ons themselves load from their
//! agent (auth configs, rate-limit domains).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trellis_ratelimit::RateLimitDomain;

use crate::ir::ValueMatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AddonKind {
    ExtAuth,
    RateLimit,
}

/// One add-on server as a cluster's proxies call it: an Envoy gRPC cluster plus filter settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonServer {
    /// `ext-auth|<namespace>/<name>` of the ExtAuthServer, or `rate-limit|<namespace>/<name>` of
    /// the RateLimitServerSettings; the Envoy filter and cluster are named after it.
    pub name: String,
    pub kind: AddonKind,
    /// Where the add-on listens in this cluster; `None` when none is registered (calls then fail
    /// and the failure mode decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<AddonEndpoint>,
    pub timeout_ms: u64,
    /// Let requests through when the server fails (ext-auth `failureModeAllow`, rate limit
    /// `!denyOnFail`).
    pub fail_open: bool,
    /// HTTP status when a failing ext-auth server denies (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<u32>,
    /// Send the request body with ext-auth checks (ExtAuthServer `requestBody`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<RequestBody>,
}

/// How much of the request body an ext-auth check carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestBody {
    pub max_bytes: u32,
    /// Send the first `max_bytes` of a larger body instead of refusing it (413).
    pub allow_partial: bool,
    /// Send it as bytes rather than as a UTF-8 string.
    pub as_bytes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonEndpoint {
    pub address: String,
    pub port: u16,
    /// The SPIFFE ID the add-on's certificate must carry (its registered service as a mesh
    /// identity); proxies call it over mTLS with their own workload certificate. Empty: plaintext.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity: String,
}

/// What one route asks of the ext-auth server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteExtAuth {
    /// Name of an [`AddonServer`] of kind `ExtAuth`.
    pub server: String,
    /// Sent with every check; `config_id` names the auth config to evaluate.
    pub context_extensions: BTreeMap<String, String>,
}

/// What one route asks of the rate limiter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRateLimit {
    /// Name of an [`AddonServer`] of kind `RateLimit`.
    pub server: String,
    /// The rate-limit domain: the RateLimitServerConfig's `namespace.name`.
    pub domain: String,
    /// One descriptor per entry; each action adds one (key, value) entry.
    pub descriptors: Vec<DescriptorActions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescriptorActions {
    pub actions: Vec<RateLimitAction>,
}

/// Envoy's rate-limit actions: how a request becomes descriptor entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitAction {
    SourceCluster,
    DestinationCluster,
    RemoteAddress,
    RequestHeaders {
        header_name: String,
        descriptor_key: String,
        skip_if_absent: bool,
    },
    GenericKey {
        descriptor_key: String,
        descriptor_value: String,
    },
    HeaderValueMatch {
        descriptor_key: String,
        descriptor_value: String,
        expect_match: bool,
        headers: Vec<(String, ValueMatch, bool)>,
    },
    /// A value from the request's metadata: `filter` namespace, then `path` keys.
    Metadata {
        descriptor_key: String,
        filter: String,
        path: Vec<String>,
        default_value: String,
        /// From the route's metadata rather than the request's dynamic metadata.
        route_entry: bool,
        skip_if_absent: bool,
    },
}

/// One resolved auth config, as the ext-auth add-on loads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthConfigEntry {
    /// The `config_id` routes send: `<namespace>.<name>` of the ExtAuthPolicy.
    pub id: String,
    /// Gloo's AuthConfigSpec with references resolved (Rego modules inlined, API keys as SHA-256
    /// digests, OIDC client secrets filled in).
    pub spec: serde_json::Value,
}

/// What a cluster's add-ons load from their agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_configs: Vec<AuthConfigEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit_domains: Vec<RateLimitDomain>,
}

impl AddonConfig {
    pub fn is_empty(&self) -> bool {
        self.auth_configs.is_empty() && self.rate_limit_domains.is_empty()
    }
}

/// The routes that reach one destination service port, mirrored on the inbound listener of its
/// workloads' sidecars when any of them carries an add-on policy: a caller that skips its own
/// sidecar (or the gateway) and calls the destination's sidecar directly still meets the
/// policies of the route it would have taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRoutes {
    pub namespace: String,
    pub service: String,
    /// The service port (a workload's `WorkloadPort::port`).
    pub port: u16,
    /// Hosts as callers address them, each domain in one host only; a request whose host
    /// matches none is refused.
    pub virtual_hosts: Vec<InboundVirtualHost>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundVirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<InboundRoute>,
}

/// One route as the destination's sidecar matches it, forwarding to the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRoute {
    /// The route it mirrors.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: crate::ir::RouteMatch,
    /// Only workloads carrying these labels (the route's subset) serve it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subset: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<RouteExtAuth>,
    /// Counted only for callers that arrive in plaintext: a request over mTLS came through a
    /// mesh proxy, which counted it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RouteRateLimit>,
}
