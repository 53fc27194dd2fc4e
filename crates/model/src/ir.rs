//! The mesh IR: what one cluster's proxies must do, independent of Envoy.
//!
//! Produced by `trellis-translate`, carried by the relay as JSON, turned into Envoy resources per
//! proxy by `trellis-envoy`. Every collection is sorted so equal configs serialize identically.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The translated configuration for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    pub cluster: String,
    /// Trust domain of the mesh's SPIFFE identities.
    #[serde(default)]
    pub trust_domain: String,
    /// Everything this cluster's sidecars may send to, sorted by name. Shared (`Arc`) with the
    /// other clusters' configs where equal: most of a mesh's upstreams look the same from every
    /// cluster but the one that hosts them.
    #[serde(default)]
    pub upstreams: Vec<Arc<Upstream>>,
    /// Outbound HTTP virtual hosts for this cluster's sidecars, sorted by name; shared with the
    /// other clusters, but for the Kubernetes-style names of this cluster's own services.
    /// Overriding hosts (see `VirtualHost::clients`) repeat the domains of a default one.
    #[serde(default)]
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
    /// What this cluster's east-west gateway serves to other clusters: each upstream's `key`
    /// is matched against the TLS SNI, its endpoints are local. Sorted by name.
    #[serde(default)]
    pub gateway_upstreams: Vec<Upstream>,
    /// AccessPolicies for this cluster's workloads' inbound listeners, in precedence order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_policies: Vec<crate::policy::InboundPolicy>,
    /// Ingress gateways (VirtualGateways) for this cluster's ingress gateway proxies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_gateways: Vec<IngressGateway>,
    /// Workspace of each namespace of this cluster (only when Workspaces are defined).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespace_workspaces: std::collections::BTreeMap<String, String>,
    /// Ext-auth and rate-limit servers this cluster's proxies call, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addon_servers: Vec<crate::addons::AddonServer>,
    /// Routes mirrored on destination sidecars' inbound listeners so that add-on policies hold
    /// there too; one entry per local service port that some add-on policy protects. Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_routes: Vec<crate::addons::InboundRoutes>,
    /// AccessLogPolicies for this cluster's sidecars and ingress gateways, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logs: Vec<crate::access_log::AccessLog>,
    /// What this cluster's add-ons load from their agent.
    #[serde(default, skip_serializing_if = "crate::addons::AddonConfig::is_empty")]
    pub addons: crate::addons::AddonConfig,
}

/// Which workspaces may see a virtual host or upstream: `None` is everyone (no Workspaces are
/// defined), `Some(list)` only those (possibly none).
pub type Visibility = Option<Vec<String>>;

/// True when a proxy in `workspace` (none: its namespace is in no workspace) may see it.
pub fn visible(visibility: &Visibility, workspace: Option<&str>) -> bool {
    match visibility {
        None => true,
        Some(list) => workspace.is_some_and(|ws| list.iter().any(|w| w == ws)),
    }
}

/// A set of endpoints that receives traffic as one Envoy cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Unique within a cluster's config; becomes the Envoy cluster name.
    pub name: String,
    /// The TLS SNI a client sidecar sends and a remote east-west gateway routes on, without
    /// terminating TLS: `outbound_.<port>_.<subset>_.<host>`.
    pub key: String,
    /// Sorted by (address, port).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// SPIFFE identities the endpoints may present, sorted; a client sidecar accepts no other.
    #[serde(default)]
    pub identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<Box<crate::policy::OutlierDetection>>,
    /// Load balancing and connection limits (LoadBalancerPolicy, ConnectionPolicy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Box<crate::policy::UpstreamTraffic>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Visibility,
    /// Set for a destination outside the mesh (ExternalService): no mesh mTLS to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<Box<ExternalUpstream>>,
    /// Share of traffic per endpoint cluster (a locality), from a FailoverPolicy whose mappings
    /// give weights (Istio's `distribute`): when set, a cluster not listed gets no traffic.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub locality_weights: std::collections::BTreeMap<String, u32>,
    /// An east-west gateway's upstream of a VirtualDestination with `clientMode: tlsTermination`:
    /// the gateway ends the client's mTLS and opens its own to the endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate_tls: bool,
}

/// How to reach a destination outside the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalUpstream {
    /// Endpoint addresses are host names to resolve by DNS (no ExternalEndpoints selected).
    #[serde(default)]
    pub dns: bool,
    /// Originate TLS with this SNI (ExternalService `clientsideTls`); plaintext when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_sni: Option<String>,
    /// How the server's certificate is checked when TLS is originated; `None` only with
    /// `insecureSkipVerify: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<ServerCheck>,
    /// MUTUAL: the certificate the proxy presents to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client: Option<ClientCredential>,
}

/// What a server outside the mesh must prove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerCheck {
    pub trust: TrustSource,
    /// Names one of which the certificate must carry (any SAN type); the SNI when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// The CAs a server certificate must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TrustSource {
    /// The proxy host's system store.
    #[default]
    System,
    /// A PEM file on the proxy's host (`caCertificates`).
    File(String),
    /// PEM certificates (a Secret's `ca.crt`, from `credentialName`).
    Pem(String),
}

/// The certificate and key a proxy presents to a server outside the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientCredential {
    /// Files on the proxy's host (`clientCertificate`, `privateKey`), read by Envoy itself.
    Files { cert: String, key: String },
    /// A Secret's `tls.crt` and `tls.key` (`credentialName`), handed to Envoy over SDS.
    Secret(TlsCredential),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    /// Relative load-balancing weight: a remote gateway counts as many as the endpoints behind it.
    pub weight: u32,
    /// The cluster the traffic ends up in.
    pub cluster: String,
    /// True when this endpoint is another cluster's east-west gateway.
    #[serde(default)]
    pub via_gateway: bool,
    /// Load-balancing priority: 0 is used first; higher ones take over when it fails
    /// (FailoverPolicy). Without failover every endpoint is 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    pub name: String,
    /// Host names (and `host:port` forms) this virtual host answers for.
    pub domains: Vec<String>,
    /// In match order: the first route that matches wins.
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Visibility,
    /// Set on a RouteTable's host that overrides: on the sidecars of the client workloads
    /// these select (any one; empty: every sidecar that may see the host), it takes the place
    /// of the hosts without `clients` for the same domains. `None`: a default host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientSelector>>,
}

/// One RouteTable `workloadSelectors` entry: which client workloads' sidecars get a host.
/// Unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSelector {
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The workspace the workload's namespace must belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// The client workload a sidecar serves, as `ClientSelector`s see it.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub cluster: &'a str,
    pub namespace: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub workspace: Option<&'a str>,
}

impl ClientSelector {
    pub fn selects(&self, client: &Client) -> bool {
        let same = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        same(&self.namespace, Some(client.namespace))
            && same(&self.cluster, Some(client.cluster))
            && same(&self.workspace, client.workspace)
            && self.labels.iter().all(|(k, v)| client.labels.get(k) == Some(v))
    }
}

impl VirtualHost {
    /// True for an overriding host (see `clients`) that applies to `client`.
    pub fn overrides_for(&self, client: &Client) -> bool {
        self.clients
            .as_ref()
            .is_some_and(|list| list.is_empty() || list.iter().any(|s| s.selects(client)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `<routetable namespace>/<routetable name>/<route name or index>`, or `default` for a
    /// VirtualDestination's implicit route.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    #[serde(default, skip_serializing_if = "crate::policy::RoutePolicies::is_empty")]
    pub policies: crate::policy::RoutePolicies,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    pub path: PathMatch,
    #[serde(default)]
    pub ignore_case: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<QueryParamMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        RouteMatch {
            path: PathMatch::Prefix("/".to_string()),
            ignore_case: false,
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// RE2 syntax, matched against the whole path.
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    Exact(String),
    /// RE2 syntax, matched against the whole value.
    Regex(String),
    /// The header or parameter is there, whatever its value.
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    pub name: String,
    pub value: ValueMatch,
    /// Match when the header does *not* match.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    Forward(Forward),
    DirectResponse {
        status: u32,
        body: String,
    },
    Redirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        status: u32,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Never empty; weights are relative and at least one is non-zero.
    pub destinations: Vec<WeightedUpstream>,
    /// Replaces the matched path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedUpstream {
    /// Name of an entry of `ClusterConfig::upstreams`.
    pub upstream: String,
    pub weight: u32,
}

impl ClusterConfig {
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name).map(|u| &**u)
    }

    /// A content version: equal configs get equal versions in every process.
    pub fn content_hash(&self) -> u64 {
        let bytes = serde_json::to_vec(self).expect("IR serializes");
        trellis_base::stable_hash(&bytes)
    }
}

/// A VirtualGateway: what the ingress gateway proxies it selects serve.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressGateway {
    /// `namespace/name` of the VirtualGateway.
    pub name: String,
    /// Ingress gateway proxies registered with all of these labels serve it.
    #[serde(default)]
    pub selector: std::collections::BTreeMap<String, String>,
    pub listeners: Vec<IngressListener>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressListener {
    pub port: u16,
    /// TLS termination; plaintext when `None` (and for a PASSTHROUGH listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,
    /// Routes bound to this gateway by RouteTables, by host; sorted by name. Forward actions
    /// name entries of `ClusterConfig::upstreams`.
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// A byte-stream listener (`listeners[].tcp`, or TLS PASSTHROUGH): no HTTP; connections go
    /// to the first of `streams` that matches (by SNI when `passthrough`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamListener>,
    /// `httpsRedirect`: every plaintext request is answered with a 301 to its `https` URL.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Egress: the AccessPolicies on the ExternalService each egress virtual host (by name)
    /// forwards to, enforced here on the mesh client's identity. Sorted by host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_access: Vec<HostAccess>,
}

/// The AccessPolicies that guard one virtual host of a gateway listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostAccess {
    /// `VirtualHost::name` on the same listener.
    pub host: String,
    /// In precedence order; only `rules` and `dry_run` matter here.
    pub policies: Vec<crate::policy::InboundPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamListener {
    /// TLS passes through untouched; routes match the client's SNI.
    #[serde(default)]
    pub passthrough: bool,
    /// RouteTable `tcp` (or, passthrough, `tls`) routes, in RouteTable order.
    #[serde(default)]
    pub routes: Vec<StreamRoute>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRoute {
    pub name: String,
    /// SNI names (`*.` wildcards allowed); empty matches any connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Never empty.
    pub destinations: Vec<WeightedUpstream>,
}

/// How a listener terminates TLS: certificate files on the gateway's host (read by Envoy
/// itself), a Secret's certificate (served to Envoy over SDS by its agent), or, `mesh_mutual`
/// (ISTIO_MUTUAL), the gateway's own mesh certificate with mesh clients only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_chain_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_file: String,
    /// MUTUAL: clients must present a certificate that chains to this CA file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// `listeners[].tls.secretName`: used instead of the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<TlsCredential>,
    /// ISTIO_MUTUAL: the gateway's mesh certificate, and a client certificate chained to the
    /// mesh root required.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_mutual: bool,
    /// `verifySubjectAltName`: a client certificate must carry one of these SANs (DNS, URI or
    /// email); empty: any certificate the CA signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_subject_alt_names: Vec<String>,
}

/// A Kubernetes TLS Secret's content. The key travels only inside the relay's config stream to
/// the gateway's agent, which hands it to Envoy over SDS: nothing writes it to disk, and `Debug`
/// never shows it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsCredential {
    /// `namespace/name` of the Secret: names the SDS secrets made of it.
    pub secret: String,
    pub cert_chain_pem: String,
    pub private_key_pem: String,
    /// MUTUAL: the Secret's `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for TlsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredential")
            .field("secret", &self.secret)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}
