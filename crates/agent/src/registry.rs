//! The local registration API: proxies (sidecars and gateways) and add-ons announce themselves
//! and refresh their registration; a registration not refreshed within [`TTL`] expires.
//!
//! Every registration has its own credential, because the agent's ports are open to every
//! local process and a registration is worth a workload identity (its private key, over SDS):
//!
//! ```text
//!  PUT /v1/proxies/<id>  (first)        ──▶ {"token": T}  once; the agent keeps only SHA-256(T)
//!  PUT/DELETE /v1/proxies/<id>          ──▶ need Authorization: Bearer T
//!  PUT ... {"xdsCsr": CSR}  (authorized) ──▶ {"xdsCertificate": C}: URI SAN trellis-node://<id>
//!  ADS stream of node <id>              ──▶ needs TLS with a C issued to <id>'s current registration
//!  GET /v1/addons/<kind>                ──▶ needs the T of a registered add-on of that kind
//! ```
//!
//! The token stays in the proxy's owner-only files; Envoy never sees it. Envoy holds only its
//! client key (a file) and certificate, so its admin `/config_dump` shows nothing that opens an
//! ADS stream (`xds_tls`).
//!
//! Who may claim what: a sidecar only the identities the agent's policy lists (`policy`); a
//! gateway or add-on only with the agent's role secret (`role_secret`).
//!
//! Surviving an agent restart: the registrations themselves are rebuilt by the proxies' next
//! refresh (no state file for them, as before), but the credentials' hashes are kept in
//! `<data-dir>/registrations.json` (mode 0600), with the fingerprints of their xDS client
//! certificates, and the xDS CA stays in the data directory. After a restart each known id
//! waits one [`TTL`] for its proxy; the running Envoys reconnect with the certificates they
//! hold and nothing restarts. A proxy that presents a well-formed token for an id the agent
//! does not know (its data directory was lost) gets that token adopted and is told it holds no
//! certificate (`xdsCertificateNeeded`), so it sends a CSR; it proves nothing more than a first
//! registration would, and is admitted by the same policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use trellis_model::access_log::AccessLogSink;
use trellis_model::discovery::AddonInstance;
use trellis_model::{ClusterDiscovery, GatewayAddress, Workload};

use super::Agent;
use super::policy::{AdmissionPolicy, is_name};

/// How long a registration lives without a refresh. Proxies refresh every few seconds.
pub const TTL: Duration = Duration::from_secs(30);

/// Largest registration body accepted; real ones are a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Most registrations (and restored credentials) one agent holds, so a local loop of PUTs
/// cannot grow its memory without end.
pub const MAX_REGISTRATIONS: usize = 4096;

/// What a proxy sends when it registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ProxyRegistration {
    /// A workload's sidecar.
    #[serde(rename_all = "camelCase")]
    Sidecar {
        workload: Workload,
        outbound_port: u16,
        /// Where its access log entries go; absent (an older proxy): Envoy's standard output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_log: Option<AccessLogSink>,
    },
    /// The cluster's east-west gateway.
    #[serde(rename_all = "camelCase")]
    EastWestGateway(RegisteredGateway),
    /// An ingress gateway: serves the VirtualGateways whose workload selector matches its labels.
    #[serde(rename_all = "camelCase")]
    IngressGateway(IngressRegistration),
    /// An add-on server (`trellis ext-auth`, `trellis rate-limiter`): the policies' server
    /// references resolve to it by namespace and name, and it loads its config from this agent.
    #[serde(rename_all = "camelCase")]
    AddOn(AddonRegistration),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRegistration {
    pub listen_address: String,
    /// VirtualGateway port -> the local port its listener binds (absent: the same port).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "port_map_with_text_keys"
    )]
    pub port_map: BTreeMap<u16, u16>,
    pub labels: BTreeMap<String, String>,
    /// Its mesh identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub namespace: String,
    pub service_account: String,
    /// Where its access log entries go; absent (an older gateway): Envoy's standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSink>,
}

/// A port map as JSON carries it: object keys are text ("80"). Serde reads numeric keys from
/// text only when it deserializes the map directly; inside the internally tagged
/// `ProxyRegistration` the body is buffered first and the keys stay text, so they are parsed here.
fn port_map_with_text_keys<'de, D>(deserializer: D) -> Result<BTreeMap<u16, u16>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: BTreeMap<String, u16> = Deserialize::deserialize(deserializer)?;
    text.into_iter()
        .map(|(port, local)| {
            port.parse::<u16>()
                .map(|port| (port, local))
                .map_err(|_| serde::de::Error::custom(format!("port map key {port:?} is not a port number")))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredGateway {
    /// Where the gateway listens.
    pub listen_address: String,
    pub port: u16,
    /// Where other clusters reach it (may differ behind NAT or a load balancer).
    pub public_address: GatewayAddress,
}

/// Which config an add-on loads from `GET /v1/addons/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddonKind {
    #[serde(rename = "ext-auth")]
    ExtAuth,
    #[serde(rename = "rate-limiter")]
    RateLimiter,
}

impl AddonKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "ext-auth" => Some(AddonKind::ExtAuth),
            "rate-limiter" => Some(AddonKind::RateLimiter),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AddonKind::ExtAuth => "ext-auth",
            AddonKind::RateLimiter => "rate-limiter",
        }
    }

    /// The 404 for an add-on route whose `{kind}` path segment names no add-on kind.
    pub fn unknown(kind: &str) -> Response {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("unknown add-on {kind:?}: use ext-auth or rate-limiter")})),
        )
            .into_response()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonRegistration {
    /// What it is: decides which config its credential may load.
    pub serves: AddonKind,
    pub namespace: String,
    pub name: String,
    pub address: String,
    pub port: u16,
}

impl AddonRegistration {
    pub fn new(serves: AddonKind, instance: AddonInstance) -> Self {
        AddonRegistration {
            serves,
            namespace: instance.namespace,
            name: instance.name,
            address: instance.address,
            port: instance.port,
        }
    }

    pub fn instance(&self) -> AddonInstance {
        AddonInstance {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            address: self.address.clone(),
            port: self.port,
        }
    }
}

impl ProxyRegistration {
    /// Sets where the proxy's access log entries go, for the roles that log (sidecars and
    /// ingress gateways: the ones with HTTP listeners).
    pub fn set_access_log(&mut self, sink: AccessLogSink) {
        match self {
            ProxyRegistration::Sidecar { access_log, .. } => *access_log = Some(sink),
            ProxyRegistration::IngressGateway(ingress) => ingress.access_log = Some(sink),
            ProxyRegistration::EastWestGateway(_) | ProxyRegistration::AddOn(_) => {}
        }
    }

    /// Where the proxy's access log entries go: what it registered, else Envoy's standard output.
    pub fn access_log(&self) -> &AccessLogSink {
        let registered = match self {
            ProxyRegistration::Sidecar { access_log, .. } => access_log.as_ref(),
            ProxyRegistration::IngressGateway(ingress) => ingress.access_log.as_ref(),
            ProxyRegistration::EastWestGateway(_) | ProxyRegistration::AddOn(_) => None,
        };
        registered.unwrap_or(&AccessLogSink::Stdout)
    }

    /// The id prefix of this role (`<prefix>~...`): ADS node ids say what they are.
    fn id_prefix(&self) -> &'static str {
        match self {
            ProxyRegistration::Sidecar { .. } => "sidecar",
            ProxyRegistration::EastWestGateway(_) => "east-west",
            ProxyRegistration::IngressGateway(_) => "ingress",
            ProxyRegistration::AddOn(_) => "addon",
        }
    }

    fn role(&self) -> &'static str {
        match self {
            ProxyRegistration::Sidecar { .. } => "a sidecar",
            ProxyRegistration::EastWestGateway(_) => "the east-west gateway",
            ProxyRegistration::IngressGateway(_) => "an ingress gateway",
            ProxyRegistration::AddOn(_) => "an add-on",
        }
    }

    /// Roles that receive other workloads' traffic or secrets: they need the role secret.
    fn privileged(&self) -> bool {
        !matches!(self, ProxyRegistration::Sidecar { .. })
    }

    fn validate(&self, id: &str) -> Result<(), RegistryError> {
        let prefix = self.id_prefix();
        if id.split_once('~').map(|(p, _)| p) != Some(prefix) {
            return Err(RegistryError::IdRole {
                id: id.to_string(),
                prefix,
                role: self.role(),
            });
        }
        let invalid = |what: &str| Err(RegistryError::Invalid(what.to_string()));
        crate::access_log_sink::check(self.access_log()).map_err(RegistryError::Invalid)?;
        match self {
            ProxyRegistration::Sidecar { workload, .. } => {
                if workload.name.is_empty() || workload.service.is_empty() || workload.address.is_empty() {
                    return invalid("workload name, namespace, service and address are required");
                }
                if !is_name(&workload.namespace) || !is_name(&workload.service_account) {
                    return invalid(
                        "workload namespace and service account must be names (lowercase letters, digits, '-' and '.')",
                    );
                }
            }
            ProxyRegistration::IngressGateway(ingress) => {
                if !is_name(&ingress.namespace) || !is_name(&ingress.service_account) {
                    return invalid(
                        "ingress namespace and service account must be names (lowercase letters, digits, '-' and '.')",
                    );
                }
            }
            ProxyRegistration::AddOn(addon) => {
                if !is_name(&addon.namespace) || !is_name(&addon.name) || addon.address.is_empty() {
                    return invalid(
                        "add-on namespace and name (lowercase letters, digits, '-' and '.') and address are required",
                    );
                }
            }
            ProxyRegistration::EastWestGateway(_) => {}
        }
        Ok(())
    }
}

/// Why a registration API request is refused; mapped to HTTP in one place ([`IntoResponse`]).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistryError {
    #[error("invalid proxy id {0:?}: use 1 to 253 characters of letters, digits, '.', '-', '_', '~' and ':'")]
    InvalidId(String),
    #[error("proxy id {id:?} must start with \"{prefix}~\" to register {role}")]
    IdRole {
        id: String,
        prefix: &'static str,
        role: &'static str,
    },
    #[error("invalid registration: {0}")]
    Invalid(String),
    #[error(
        "{0:?} is registered already: refreshing, changing or deleting it needs its credential (Authorization: Bearer <the token its first registration returned>)"
    )]
    CredentialRequired(String),
    #[error("the credential does not match the registration of {0:?}")]
    WrongCredential(String),
    #[error("malformed bearer token: use the token the agent issued")]
    MalformedToken,
    #[error(
        "registering {0} needs the agent's role secret (header x-trellis-role-secret; gateways and add-ons read it from --role-secret-file, by default the copy the agent publishes for its local user)"
    )]
    RoleSecretRequired(&'static str),
    #[error(
        "namespace {namespace:?} / service account {service_account:?} may not register with this agent (hint: start the agent with --allow-namespace {namespace} or --allow-service-account {namespace}/{service_account})"
    )]
    NotAllowed { namespace: String, service_account: String },
    #[error(
        "gateways and add-ons may not take identities in namespace {0:?} on this agent (hint: start the agent with --allow-gateway-namespace {0})"
    )]
    GatewayNamespaceNotAllowed(String),
    #[error("{0:?} is not registered")]
    NotFound(String),
    #[error("this agent holds {MAX_REGISTRATIONS} registrations, its limit")]
    Full,
    #[error(
        "the {0} config is served only to a registered {0} add-on (Authorization: Bearer <its registration token>)"
    )]
    AddonCredentialRequired(&'static str),
    #[error(
        "this agent discovers from Kubernetes: a sidecar proves its pod's identity with a service-account token for the audience trellis-agent (--service-account-token-file; the injector mounts one)"
    )]
    PodTokenRequired,
    #[error("the pod's identity was refused: {0}")]
    PodIdentity(String),
}

impl RegistryError {
    fn status(&self) -> StatusCode {
        match self {
            RegistryError::InvalidId(_)
            | RegistryError::IdRole { .. }
            | RegistryError::Invalid(_)
            | RegistryError::MalformedToken => StatusCode::BAD_REQUEST,
            RegistryError::CredentialRequired(_)
            | RegistryError::AddonCredentialRequired(_)
            | RegistryError::PodTokenRequired => StatusCode::UNAUTHORIZED,
            RegistryError::PodIdentity(_) => StatusCode::FORBIDDEN,
            RegistryError::WrongCredential(_)
            | RegistryError::RoleSecretRequired(_)
            | RegistryError::NotAllowed { .. }
            | RegistryError::GatewayNamespaceNotAllowed(_) => StatusCode::FORBIDDEN,
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Full => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A stable word for clients deciding whether to retry (`trellis proxy` waits out a held id).
    fn code(&self) -> &'static str {
        match self {
            RegistryError::InvalidId(_) | RegistryError::IdRole { .. } | RegistryError::Invalid(_) => "invalid",
            RegistryError::CredentialRequired(_) => "credential-required",
            RegistryError::WrongCredential(_) => "wrong-credential",
            RegistryError::MalformedToken => "malformed-token",
            RegistryError::RoleSecretRequired(_) => "role-secret-required",
            RegistryError::NotAllowed { .. } | RegistryError::GatewayNamespaceNotAllowed(_) => "not-allowed",
            RegistryError::NotFound(_) => "not-found",
            RegistryError::Full => "full",
            RegistryError::AddonCredentialRequired(_) | RegistryError::PodTokenRequired => "credential-required",
            RegistryError::PodIdentity(_) => "not-allowed",
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(json!({"error": self.to_string(), "code": self.code()}));
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// What a request presents besides its registration.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// From `Authorization: Bearer <token>`.
    pub token: Option<&'a str>,
    /// From the role secret header.
    pub role_secret: Option<&'a str>,
    /// A CSR (PEM) for the node's xDS client certificate, from the body's `xdsCsr`.
    pub xds_csr: Option<&'a str>,
    /// The loopback port of the proxy's Envoy admin, from the body's `adminPort`.
    pub admin_port: Option<u16>,
}

/// The body of `PUT /v1/proxies/<id>`: the registration, and optionally a CSR.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    #[serde(flatten)]
    pub registration: ProxyRegistration,
    #[serde(default, rename = "xdsCsr")]
    pub xds_csr: Option<String>,
    #[serde(default, rename = "adminPort")]
    pub admin_port: Option<u16>,
    /// A Kubernetes pod's service-account token, for an agent that discovers from Kubernetes.
    #[serde(default, rename = "serviceAccountToken")]
    pub service_account_token: Option<String>,
}

/// The answer to an accepted registration.
#[derive(Debug, PartialEq, Default)]
pub struct Registered {
    /// A newly issued token: returned this once, never stored in clear.
    pub token: Option<String>,
    /// The xDS client certificate signed for the request's CSR.
    pub xds_certificate: Option<String>,
    /// The registration holds no xDS client certificate (its credential is new, or was
    /// restored without one): the proxy should send a CSR.
    pub xds_certificate_needed: bool,
}

/// How many client certificates of one registration are honoured: the newest and the one
/// before it, so that an Envoy still on its previous certificate (it reloads renewed files a
/// moment later; an open ADS connection keeps the certificate it was opened with) keeps working
/// through a renewal.
const XDS_CERTS_KEPT: usize = 2;

struct Entry {
    token_sha256: String,
    /// `None`: a credential restored after a restart, waiting for its proxy's refresh.
    /// Shared, so the snapshot builder takes every registration without copying it.
    registration: Option<Arc<ProxyRegistration>>,
    expires: Instant,
    /// Fingerprints of the xDS client certificates issued under this credential, oldest first.
    xds_certs: Vec<String>,
    /// Where its Envoy's admin listens on loopback, as the proxy said.
    admin_port: Option<u16>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StoredCredentials {
    /// Proxy id → lowercase hex SHA-256 of its token.
    token_sha256: BTreeMap<String, String>,
    /// Proxy id → fingerprints of its xDS client certificates (public: certificates are not
    /// secrets; kept so running Envoys reconnect to a restarted agent).
    #[serde(default)]
    xds_cert_sha256: BTreeMap<String, Vec<String>>,
}

pub struct Registry {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Bumped on every change of the set of registrations.
    pub changes: watch::Sender<u64>,
    /// Bumped when a registration other than a sidecar's changes (a gateway, an add-on): those
    /// shape other proxies' config (where to call ext-auth, how to reach this cluster), so the
    /// relay reports them at once instead of gathering them with sidecar registrations.
    pub frame_changes: watch::Sender<u64>,
    xds_addr: SocketAddr,
    policy: AdmissionPolicy,
    role_secret_sha256: String,
    /// Where the credentials' hashes are kept across restarts; `None` in unit tests.
    store: Option<PathBuf>,
    /// Signs the nodes' xDS client certificates.
    xds_ca: Arc<super::xds_tls::XdsCa>,
    /// In Kubernetes mode, the cluster's workloads as its API server says (Services,
    /// EndpointSlices, Pods); sidecars' registrations then give proxies their config and
    /// identity, not the workloads the cluster reports. The nodes' locality comes with them.
    kubernetes: Mutex<Option<trellis_kube::discovery::KubernetesView>>,
}

// === impl Registry ===

impl Registry {
    /// A registry admitting sidecars by `policy` and privileged roles by `role_secret`; with a
    /// `store`, the credentials saved there by the previous run are restored for one [`TTL`].
    pub fn new(
        xds_addr: SocketAddr,
        policy: AdmissionPolicy,
        role_secret: &str,
        store: Option<PathBuf>,
        xds_ca: Arc<super::xds_tls::XdsCa>,
        now: Instant,
    ) -> Self {
        let mut entries = BTreeMap::new();
        if let Some(path) = &store {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<StoredCredentials>(&bytes) {
                    Ok(mut stored) => {
                        for (id, token_sha256) in stored.token_sha256.into_iter().take(MAX_REGISTRATIONS) {
                            let mut xds_certs = stored.xds_cert_sha256.remove(&id).unwrap_or_default();
                            xds_certs.truncate(XDS_CERTS_KEPT);
                            entries.insert(
                                id,
                                Entry {
                                    token_sha256,
                                    registration: None,
                                    expires: now + TTL,
                                    xds_certs,
                                    admin_port: None,
                                },
                            );
                        }
                        tracing::info!(
                            credentials = entries.len(),
                            "restored registration credentials; their proxies have one TTL to refresh"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, path = %path.display(), "ignoring an unreadable credentials file; proxies keep their tokens, which are adopted at their next refresh")
                    }
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(%error, path = %path.display(), "cannot read the credentials file"),
            }
        }
        Registry {
            entries: Mutex::new(entries),
            changes: watch::Sender::new(0),
            frame_changes: watch::Sender::new(0),
            xds_addr,
            policy,
            role_secret_sha256: trellis_base::sha256_hex(role_secret.as_bytes()),
            store,
            xds_ca,
            kubernetes: Mutex::new(None),
        }
    }

    /// Takes the workloads of Kubernetes discovery as the cluster's, from now on.
    pub fn set_kubernetes_view(&self, view: trellis_kube::discovery::KubernetesView) {
        *self.kubernetes.lock().expect("kubernetes view lock") = Some(view);
        self.bump(false);
    }

    /// Signals a change; `frame` when it concerns a registration other than a sidecar's.
    fn bump(&self, frame: bool) {
        self.changes.send_modify(|n| *n += 1);
        if frame {
            self.frame_changes.send_modify(|n| *n += 1);
        }
    }

    /// Saves the credentials' hashes (under the lock, so writes happen in order).
    fn persist(&self, entries: &BTreeMap<String, Entry>) {
        let Some(path) = &self.store else { return };
        let stored = StoredCredentials {
            token_sha256: entries
                .iter()
                .map(|(id, e)| (id.clone(), e.token_sha256.clone()))
                .collect(),
            xds_cert_sha256: entries
                .iter()
                .filter(|(_, e)| !e.xds_certs.is_empty())
                .map(|(id, e)| (id.clone(), e.xds_certs.clone()))
                .collect(),
        };
        let text = serde_json::to_string(&stored).expect("credentials serialize");
        if let Err(error) = trellis_support::files::write_private(path, &text) {
            tracing::error!(error = %format!("{error:#}"), "cannot save registration credentials; after a restart proxies re-register");
        }
    }

    fn role_secret_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|secret| {
            constant_time_eq(
                trellis_base::sha256_hex(secret.as_bytes()).as_bytes(),
                self.role_secret_sha256.as_bytes(),
            )
        })
    }

    /// Registers or refreshes `id`. See the module docs for who may.
    pub fn register(
        &self,
        id: &str,
        registration: ProxyRegistration,
        presented: Presented<'_>,
        now: Instant,
    ) -> Result<Registered, RegistryError> {
        validate_id(id)?;
        registration.validate(id)?;
        // The role secret lets a gateway or add-on in; which identity it gets is still the
        // operator's to decide, or whoever holds the secret could take any service account.
        match &registration {
            ProxyRegistration::Sidecar { workload, .. } => {
                self.policy.admit(&workload.namespace, &workload.service_account)?
            }
            ProxyRegistration::IngressGateway(ingress) => self.policy.admit_gateway(&ingress.namespace)?,
            ProxyRegistration::AddOn(addon) => self.policy.admit_gateway(&addon.namespace)?,
            ProxyRegistration::EastWestGateway(_) => {}
        }
        let mut entries = self.entries.lock().expect("registry lock");
        let existing = entries.get(id);
        let holds_id = match (existing, presented.token) {
            (Some(entry), Some(token)) => token_matches(token, &entry.token_sha256),
            _ => false,
        };
        // The secret gates taking a privileged role; keeping it needs only the id's token, so
        // a running gateway outlives a rotation of the secret.
        let secret_ok = registration.privileged() && self.role_secret_ok(presented.role_secret);
        if registration.privileged() && !holds_id && !secret_ok {
            return Err(RegistryError::RoleSecretRequired(registration.role()));
        }
        let (token, credential_changed) = match existing {
            Some(_) if holds_id => (None, false),
            // A holder of the role secret may take a privileged id over: it could register the
            // role under another id anyway, and an add-on that restarts has lost its in-memory
            // token. The old credential stops working.
            Some(_) if secret_ok => (Some(trellis_pki::random_token()), true),
            Some(_) if presented.token.is_some() => return Err(RegistryError::WrongCredential(id.to_string())),
            Some(_) => return Err(RegistryError::CredentialRequired(id.to_string())),
            None => {
                if entries.len() >= MAX_REGISTRATIONS {
                    return Err(RegistryError::Full);
                }
                match presented.token {
                    Some(token) if well_formed_token(token) => (None, true),
                    Some(_) => return Err(RegistryError::MalformedToken),
                    None => (Some(trellis_pki::random_token()), true),
                }
            }
        };
        let token_sha256 = match (&token, presented.token) {
            (Some(issued), _) => trellis_base::sha256_hex(issued.as_bytes()),
            (None, Some(kept)) => trellis_base::sha256_hex(kept.as_bytes()),
            (None, None) => unreachable!("a registration without a presented token is issued one"),
        };
        // Certificates issued under a replaced credential die with it.
        let mut xds_certs = match entries.get(id) {
            Some(entry) if !credential_changed => entry.xds_certs.clone(),
            _ => Vec::new(),
        };
        // Signed only now, after every check above: the CSR's holder has shown this id's
        // credential (or is registering it first), so the certificate goes to its owner.
        let xds_certificate = match presented.xds_csr {
            Some(csr) => {
                let chain = self
                    .xds_ca
                    .sign(csr, id, std::time::SystemTime::now())
                    .map_err(|e| RegistryError::Invalid(format!("xdsCsr: {e}")))?;
                let leaf = trellis_pki::pem_to_der_certs(&chain)
                    .map_err(|e| RegistryError::Invalid(format!("xdsCsr: {e}")))?;
                xds_certs.push(super::xds_tls::fingerprint(&leaf[0]));
                let excess = xds_certs.len().saturating_sub(XDS_CERTS_KEPT);
                xds_certs.drain(..excess);
                Some(chain)
            }
            None => None,
        };
        let xds_certificate_needed = xds_certs.is_empty();
        let before = entries.get(id).and_then(|e| e.registration.as_deref());
        let changed = before != Some(&registration);
        let frame = !is_sidecar(Some(&registration)) || !is_sidecar(before);
        entries.insert(
            id.to_string(),
            Entry {
                token_sha256,
                registration: Some(Arc::new(registration)),
                expires: now + TTL,
                xds_certs,
                admin_port: presented.admin_port,
            },
        );
        if credential_changed || xds_certificate.is_some() {
            self.persist(&entries);
        }
        drop(entries);
        if token.is_some() && credential_changed {
            tracing::info!(proxy.id = id, "issued a registration credential");
        }
        if xds_certificate.is_some() {
            tracing::info!(proxy.id = id, "issued an xDS client certificate");
        }
        if changed {
            tracing::info!(proxy.id = id, "proxy registered");
            self.bump(frame);
        }
        Ok(Registered {
            token,
            xds_certificate,
            xds_certificate_needed,
        })
    }

    /// The loopback port of `id`'s Envoy admin, if it is registered and said.
    pub fn admin_port(&self, id: &str) -> Option<u16> {
        let entries = self.entries.lock().expect("registry lock");
        entries
            .get(id)
            .filter(|e| e.registration.is_some())
            .and_then(|e| e.admin_port)
    }

    /// Removes `id`, for the holder of its credential.
    pub fn deregister(&self, id: &str, token: Option<&str>) -> Result<(), RegistryError> {
        validate_id(id)?;
        let mut entries = self.entries.lock().expect("registry lock");
        let entry = entries.get(id).ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        match token {
            Some(token) if token_matches(token, &entry.token_sha256) => {}
            Some(_) => return Err(RegistryError::WrongCredential(id.to_string())),
            None => return Err(RegistryError::CredentialRequired(id.to_string())),
        }
        let removed = entries.remove(id).and_then(|e| e.registration);
        self.persist(&entries);
        drop(entries);
        tracing::info!(proxy.id = id, "proxy deregistered");
        if let Some(removed) = removed {
            self.bump(!is_sidecar(Some(&removed)));
        }
        Ok(())
    }

    /// Whether an ADS stream whose TLS client certificate is `cert_der` (already verified
    /// against the xDS CA) may act as node `id`: the certificate must name `id` and be one
    /// issued to `id`'s current registration (live, or restored after a restart). A
    /// certificate of a deleted, expired or taken-over registration is refused, whatever its
    /// validity dates say. The reason is for the refused client.
    pub fn authorize_xds(&self, id: &str, cert_der: &[u8]) -> Result<(), &'static str> {
        if super::xds_tls::node_of_certificate(cert_der)? != id {
            return Err("the client certificate names another node");
        }
        let presented = super::xds_tls::fingerprint(cert_der);
        let entries = self.entries.lock().expect("registry lock");
        let Some(entry) = entries.get(id) else {
            return Err("the node is not registered (deleted or expired): register again for a new certificate");
        };
        // Every kept fingerprint is compared, whatever matched before.
        let current = entry.xds_certs.iter().fold(false, |found, kept| {
            constant_time_eq(kept.as_bytes(), presented.as_bytes()) | found
        });
        if current {
            Ok(())
        } else {
            Err("the client certificate is not one issued to this node's current registration")
        }
    }

    /// The xDS CA's certificate, for proxies to check the server against.
    pub fn xds_ca_pem(&self) -> &str {
        self.xds_ca.ca_pem()
    }

    /// The id of the live add-on of `kind` whose credential `token` is, if any.
    pub fn addon_for_token(&self, kind: AddonKind, token: &str) -> Option<String> {
        let presented = trellis_base::sha256_hex(token.as_bytes());
        let entries = self.entries.lock().expect("registry lock");
        // Every entry is compared, in constant time, whatever matched before.
        let mut found = None;
        for (id, entry) in entries.iter() {
            let is_kind =
                matches!(entry.registration.as_deref(), Some(ProxyRegistration::AddOn(a)) if a.serves == kind);
            if constant_time_eq(presented.as_bytes(), entry.token_sha256.as_bytes()) && is_kind {
                found = Some(id.clone());
            }
        }
        found
    }

    pub fn get(&self, id: &str) -> Option<ProxyRegistration> {
        self.entries
            .lock()
            .expect("registry lock")
            .get(id)
            .and_then(|e| e.registration.as_deref().cloned())
    }

    /// The live registrations (no credentials in them).
    pub fn all(&self) -> BTreeMap<String, ProxyRegistration> {
        self.entries
            .lock()
            .expect("registry lock")
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.registration.as_deref()?.clone())))
            .collect()
    }

    /// The live registrations, shared rather than copied: what the snapshot builder reads on
    /// every pass.
    pub fn all_shared(&self) -> BTreeMap<String, Arc<ProxyRegistration>> {
        self.entries
            .lock()
            .expect("registry lock")
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.registration.clone()?)))
            .collect()
    }

    /// Drops what was not refreshed in time; returns the ids whose credential went with it.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut entries = self.entries.lock().expect("registry lock");
        let mut expired = Vec::new();
        let (mut registrations_changed, mut frame_changed) = (false, false);
        entries.retain(|id, entry| {
            let keep = entry.expires > now;
            if !keep {
                if entry.registration.is_some() {
                    tracing::warn!(proxy.id = %id, "registration expired: the proxy stopped refreshing it");
                    registrations_changed = true;
                    frame_changed |= !is_sidecar(entry.registration.as_deref());
                } else {
                    tracing::info!(proxy.id = %id, "restored credential expired: its proxy did not come back");
                }
                expired.push(id.clone());
            }
            keep
        });
        if !expired.is_empty() {
            self.persist(&entries);
        }
        drop(entries);
        if registrations_changed {
            self.bump(frame_changed);
        }
        expired
    }

    /// This cluster as the management server should see it.
    pub fn discovery(&self, cluster: &str) -> ClusterDiscovery {
        let mut discovery = ClusterDiscovery {
            cluster: cluster.to_string(),
            ..Default::default()
        };
        let kubernetes = self.kubernetes.lock().expect("kubernetes view lock").clone();
        let from_kubernetes = kubernetes.is_some();
        if let Some(view) = kubernetes {
            discovery.workloads = view.workloads;
            discovery.locality = view.locality;
        }
        for registration in self.all().into_values() {
            match registration {
                ProxyRegistration::Sidecar { workload, .. } if !from_kubernetes => discovery.workloads.push(workload),
                ProxyRegistration::Sidecar { .. } => {}
                // Announced like services: egress routes reach it on the VirtualGateway ports.
                ProxyRegistration::IngressGateway(ingress) => discovery.gateways.push(trellis_model::GatewayInstance {
                    namespace: ingress.namespace,
                    service_account: ingress.service_account,
                    address: ingress.listen_address,
                    labels: ingress.labels,
                    port_map: ingress.port_map,
                }),
                ProxyRegistration::AddOn(addon) => discovery.addons.push(addon.instance()),
                ProxyRegistration::EastWestGateway(gateway) => {
                    // With several gateway replicas, one stable address wins.
                    if discovery
                        .east_west_gateway
                        .as_ref()
                        .is_none_or(|g| gateway.public_address < *g)
                    {
                        discovery.east_west_gateway = Some(gateway.public_address);
                    }
                }
            }
        }
        discovery.normalize();
        discovery
    }
}

/// Proxy ids become ADS node ids, file names and log fields: keep them plain.
fn validate_id(id: &str) -> Result<(), RegistryError> {
    let ok = !id.is_empty()
        && id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidId(id.chars().take(64).collect()))
    }
}

/// Tokens the agent issues are 43 base64url characters; an adopted one must look as strong.
fn well_formed_token(token: &str) -> bool {
    (32..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn token_matches(token: &str, token_sha256: &str) -> bool {
    constant_time_eq(
        trellis_base::sha256_hex(token.as_bytes()).as_bytes(),
        token_sha256.as_bytes(),
    )
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of `Authorization: Bearer <token>`, if that is what the header holds.
/// True for a sidecar's registration, and for none.
fn is_sidecar(registration: Option<&ProxyRegistration>) -> bool {
    matches!(registration, None | Some(ProxyRegistration::Sidecar { .. }))
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn presented<'a>(headers: &'a HeaderMap, xds_csr: Option<&'a str>, admin_port: Option<u16>) -> Presented<'a> {
    Presented {
        token: bearer(headers),
        role_secret: headers.get(super::role_secret::HEADER).and_then(|v| v.to_str().ok()),
        xds_csr,
        admin_port,
    }
}

pub async fn expire_loop(agent: Arc<Agent>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for id in agent.registry.expire(Instant::now()) {
            agent.snapshots.forget(&id);
        }
    }
}

pub fn router(
    agent: Arc<Agent>,
    board: trellis_xds::ProxyStatusBoard,
    metrics: Arc<prometheus_client::registry::Registry>,
) -> Router {
    Router::new()
        .route("/v1/proxies", get(list))
        .route("/v1/proxies/{id}", put(register).delete(deregister))
        .route("/v1/status", get(status))
        .route("/v1/addons/{kind}", get(super::addon_config::serve))
        .route(
            "/v1/addons/{kind}/certificate",
            axum::routing::post(super::addon_identity::issue),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut text = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut text, &metrics);
                    text
                }
            }),
        )
        .route(
            "/metrics/proxies",
            get(|State((agent, _)): AppState| super::proxy_metrics::serve(agent)),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state((agent, board))
}

type AppState = State<(Arc<Agent>, trellis_xds::ProxyStatusBoard)>;

async fn register(
    State((agent, _)): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<RegisterBody>,
) -> Result<Json<serde_json::Value>, RegistryError> {
    if let (Some(reviewer), ProxyRegistration::Sidecar { workload, .. }) = (&agent.pod_identity, &body.registration) {
        let token = body
            .service_account_token
            .as_deref()
            .ok_or(RegistryError::PodTokenRequired)?;
        let pod = reviewer.review(token).await.map_err(RegistryError::PodIdentity)?;
        if pod.namespace != workload.namespace || pod.service_account != workload.service_account {
            return Err(RegistryError::PodIdentity(format!(
                "the token is {}/{}'s, the registration claims {}/{}",
                pod.namespace, pod.service_account, workload.namespace, workload.service_account
            )));
        }
    }
    let registered = agent
        .registry
        .register(
            &id,
            body.registration,
            presented(&headers, body.xds_csr.as_deref(), body.admin_port),
            Instant::now(),
        )
        .inspect_err(
            |error| tracing::warn!(proxy.id = %id.chars().take(64).collect::<String>(), %error, "registration refused"),
        )?;
    if registered.token.is_some() {
        // A new credential for this id: streams opened with the one it replaces must end.
        agent.snapshots.forget(&id);
    }
    let xds = agent.registry.xds_addr;
    let mut answer = json!({
        "cluster": agent.cluster,
        "xdsAddress": xds.ip().to_string(),
        "xdsPort": xds.port(),
        "xdsServerName": super::xds_tls::SERVER_NAME,
        "xdsCa": agent.registry.xds_ca_pem(),
        "xdsCertificateNeeded": registered.xds_certificate_needed,
    });
    if let Some(token) = registered.token {
        answer["token"] = token.into();
    }
    if let Some(certificate) = registered.xds_certificate {
        answer["xdsCertificate"] = certificate.into();
    }
    Ok(Json(answer))
}

async fn deregister(
    State((agent, _)): AppState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, RegistryError> {
    agent.registry.deregister(&id, bearer(&headers)).inspect_err(
        |error| tracing::warn!(proxy.id = %id.chars().take(64).collect::<String>(), %error, "deregistration refused"),
    )?;
    agent.snapshots.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State((agent, _)): AppState) -> Json<serde_json::Value> {
    Json(json!({"proxies": agent.registry.all()}))
}

async fn status(State((agent, board)): AppState) -> Json<serde_json::Value> {
    let config = agent.config.borrow().clone();
    let proxies: Vec<_> = board
        .snapshot()
        .into_iter()
        .map(|p| {
            let types: BTreeMap<_, _> = p
                .types
                .iter()
                .map(|(t, s)| {
                    (
                        t.rsplit('.').next().unwrap_or(t).to_string(),
                        json!({"sent": s.last_sent_version, "acked": s.last_acked_version, "nack": s.last_nack}),
                    )
                })
                .collect();
            json!({"nodeId": p.node_id, "types": types})
        })
        .collect();
    Json(json!({
        "cluster": agent.cluster,
        "relayConnected": agent.relay_connected.load(std::sync::atomic::Ordering::Relaxed),
        "configVersion": config.map(|c| c.version.clone()),
        "connectedProxies": proxies,
    }))
}

#[cfg(test)]
mod tests;
