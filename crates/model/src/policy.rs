//! Policy parts of the mesh IR: what routes, upstreams and inbound listeners do beyond routing.
//! Durations are milliseconds; percentages are 0-100 with up to 4 decimals (Envoy's
//! FractionalPercent in millionths).

use serde::{Deserialize, Serialize};

use crate::ir::{PathMatch, ValueMatch};

/// Per-route behaviour from RetryTimeout, FaultInjection and HeaderManipulation policies.
/// Every route carries one (a hundred thousand hosts make over a million routes across
/// clusters), and most set none of the policies: the larger, rarer ones are boxed, so an unset
/// one costs a pointer, not its whole size.
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
    /// Cross-origin requests the route allows (CORSPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Box<Cors>>,
    /// Copies of requests sent elsewhere, answers dropped (MirrorPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Box<Mirror>>,
    /// Requests are read whole, up to this many bytes (413 beyond), before they are forwarded
    /// (HTTPBufferPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_max_request_bytes: Option<u32>,
    /// Cross-site request forgery checks (CSRFPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<Box<Csrf>>,
    /// Tokens a request must carry (JWTPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<Box<JwtRequirement>>,
    /// What to hash for a destination balanced by consistent hashing (LoadBalancerPolicy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash: Vec<HashKey>,
    /// Request and response templates (TransformationPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<Box<crate::transformation::Transformation>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        path: String,
        /// Envoy sets the cookie with this lifetime when the request has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    /// Consistent hashing; the routes to the upstream say what to hash.
    RingHash,
}

/// How an upstream's endpoints are picked and its connections limited (LoadBalancerPolicy,
/// ConnectionPolicy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTraffic {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_policy: Option<LbPolicy>,
    /// Percent of healthy endpoints below which all are used; hundredths of a percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_panic_threshold_basis_points: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_merge_window_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Active health checking of the endpoints (ActiveHealthCheckPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// A new endpoint's warm-up (LoadBalancerPolicy `warmupDurationSecs`): its share of
    /// requests grows over this long (Envoy's slow start; round robin and least request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub timeout_ms: u64,
    pub interval_ms: u64,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval_ms: Option<u64>,
    pub probe: HealthProbe,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HealthProbe {
    /// A connection that opens is healthy.
    #[default]
    Tcp,
    /// A GET of `path` answered 200 (or one of `expected_statuses`, as [start, end) ranges).
    Http {
        path: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        host: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        expected_statuses: Vec<(u32, u32)>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<u32>,
}

/// How a CORS origin, or any string, is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// RE2, whole string.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginMatch {
    pub matcher: StringMatch,
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    pub allow_origins: Vec<OriginMatch>,
    /// Comma separated, as the `access-control-allow-*` headers carry them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub allow_methods: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub allow_headers: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expose_headers: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// Mutating requests (POST, PUT, DELETE, PATCH) whose Origin is neither the Host nor one of
/// `additional_origins` are refused with 403.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Csrf {
    /// Share of requests checked and refused, in millionths.
    pub enforce_per_million: u32,
    /// Share of requests checked and only counted, in millionths.
    pub shadow_per_million: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_origins: Vec<OriginMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Name of an entry of `ClusterConfig::upstreams`.
    pub upstream: String,
    /// Share of requests copied, in millionths (1_000_000 = all).
    pub per_million: u32,
}

/// A key set the proxy fetches over HTTP(S) and caches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// HTTPS: the server's certificate must chain to the system's roots and name `host`.
    #[serde(default)]
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Fetch when the listener starts, not on the first request.
    #[serde(default)]
    pub async_fetch: bool,
}

impl RemoteJwks {
    /// The cluster the proxy fetches through, one per server.
    pub fn cluster_name(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("jwks|{scheme}|{}:{}", self.host, self.port)
    }
}

/// What a route asks of a request's token: a valid one from any of the providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRequirement {
    /// The JWTPolicy, `namespace/name`: names the requirement in Envoy.
    pub name: String,
    pub providers: Vec<JwtProvider>,
    /// A request without a token passes (a bad token does not, unless `allow_failed`).
    #[serde(default)]
    pub allow_missing: bool,
    #[serde(default)]
    pub allow_failed: bool,
    /// Every rule must hold for the verified token's payload (JWTPolicy `claims`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimRule>,
    /// Each must be a word of the payload's `scope` claim (JWTPolicy `requiredScopes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
}

/// A claim of the token's payload, at `path` (nested objects), that must match one of `values`
/// (when any are given) and none of `not_values`. A value starting or ending with `*` matches
/// by suffix or prefix; `*` alone matches any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRule {
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtProvider {
    /// `namespace/policy/provider`: unique in a proxy.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The key set, inline (JWKS JSON or PEM); empty when `remote` gives it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_jwks: String,
    /// Where the proxy fetches the key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteJwks>,
    /// Read the token from these headers (name, value prefix); `Authorization: Bearer` when
    /// neither headers nor query parameters are given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// (claim, header): copied into request headers for the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_to_headers: Vec<(String, String)>,
    /// Pass the token on to the upstream.
    #[serde(default)]
    pub forward: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload_header: String,
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
    /// Headers whose value must not match (a request without the header passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_headers: Vec<(String, ValueMatch)>,
    /// Caller IP ranges (CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
}
