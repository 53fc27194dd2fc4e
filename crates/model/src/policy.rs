//! Policy parts of the mesh IR: what routes, upstreams and inbound listeners do beyond routing.
//! Durations are milliseconds; percentages are 0-100 with up to 4 decimals (Envoy's
//! FractionalPercent in millionths).

use serde::{Deserialize, Serialize};

use crate::ir::{PathMatch, ValueMatch};

/// Per-route behaviour from RetryTimeout, FaultInjection and HeaderManipulation policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePolicies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Whole-request timeout; `None` keeps Envoy's default (15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub request_headers: Headers,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub response_headers: Headers,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<crate::addons::RouteExtAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::addons::RouteRateLimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy retry_on conditions, comma separated (`5xx,connect-failure,reset`).
    pub retry_on: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, in millionths (1_000_000 = all).
    pub per_million: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    pub http_status: u32,
    /// Share of requests aborted, in millionths (1_000_000 = all).
    pub per_million: u32,
}

/// Headers to add (or overwrite) and remove, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
    /// Append to an existing value instead of overwriting it.
    #[serde(default)]
    pub append: bool,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

impl RoutePolicies {
    pub fn is_empty(&self) -> bool {
        *self == RoutePolicies::default()
    }
}

/// Passive health checking of an upstream's endpoints (OutlierDetectionPolicy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    pub consecutive_errors: u32,
    pub interval_ms: u64,
    pub base_ejection_time_ms: u64,
    pub max_ejection_percent: u32,
}

/// Authorization and TLS mode of a workload's inbound listeners (AccessPolicy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPolicy {
    /// The AccessPolicy this came from, `namespace/name`.
    pub name: String,
    /// Workloads it applies to: all of these labels (empty: any), in this namespace (empty: any),
    /// backing this service (empty: any).
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<TlsMode>,
    /// `None`: no authorization from this policy. `Some(rules)`: a request is allowed when any
    /// rule matches (an empty list allows nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<AuthzRule>>,
    /// Evaluate and count, deny nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// mTLS and plaintext both accepted.
    Permissive,
    /// mTLS only.
    Strict,
    /// Plaintext only.
    Disable,
}

/// One allow rule: every non-empty field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzRule {
    /// Allowed caller identities: exact SPIFFE IDs, or prefixes ending in `/` or `*`
    /// (`spiffe://td/ns/demo/sa/*` for a whole namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, ValueMatch)>,
    /// Caller IP ranges (CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
}
