//! The management server's configuration: defaults, then a config file (`--config`), then flags.
//! Every key of the file is the camelCase form of a flag; unknown keys are an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use trellis_base::parse_duration;

/// Flags of `trellis mgmt`. Unset flags fall back to the config file, then to the defaults shown.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MgmtArgs {
    /// YAML config file; its keys are the camelCase names of these flags.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the store and generated certificates [default: .trellis/mgmt]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// REST API address [default: 127.0.0.1:8090]
    #[arg(long)]
    pub api_addr: Option<SocketAddr>,
    /// Relay (gRPC) address agents connect to [default: 127.0.0.1:9900]
    #[arg(long)]
    pub relay_addr: Option<SocketAddr>,
    /// Metrics and health address (/metrics, /healthz, /readyz) [default: 127.0.0.1:9091]
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// Plaintext relay without certificates or tokens. For demos only: never in production.
    #[arg(long)]
    pub insecure: bool,
    /// DNS name in the relay server certificate; agents verify it [default: trellis-mgmt.trellis]
    #[arg(long)]
    pub relay_authority: Option<String>,
    /// No built-in CA: agents bring client certificates signed by the operator's CA
    /// (--relay-root-ca); registration tokens are not used.
    #[arg(long)]
    pub disable_ca: bool,
    /// Use operator-supplied relay root, signing CA and server certificate files instead of
    /// generating them.
    #[arg(long)]
    pub disable_ca_cert_generation: bool,
    /// Relay root CA certificate (PEM): trusted for client certificates and given to agents.
    #[arg(long)]
    pub relay_root_ca: Option<PathBuf>,
    /// Intermediate CA that signs agent CSRs (the signingTlsSecret role).
    #[arg(long)]
    pub relay_signing_cert: Option<PathBuf>,
    #[arg(long)]
    pub relay_signing_key: Option<PathBuf>,
    /// Relay server certificate chain and key (the tlsSecret role).
    #[arg(long)]
    pub relay_server_cert: Option<PathBuf>,
    #[arg(long)]
    pub relay_server_key: Option<PathBuf>,
    /// Lifetime of agent client certificates; agents renew at two thirds [default: 24h]
    #[arg(long)]
    pub client_cert_ttl: Option<String>,
    /// Default lifetime of registration tokens [default: 1h]
    #[arg(long)]
    pub token_ttl: Option<String>,
    /// Operator-supplied mesh root CA (the RootTrustPolicy role); generated when not given.
    #[arg(long)]
    pub mesh_root_cert: Option<PathBuf>,
    #[arg(long)]
    pub mesh_root_key: Option<PathBuf>,
    /// Lifetime of the per-cluster intermediate CAs signed for agents [default: 720h]
    #[arg(long)]
    pub intermediate_ttl: Option<String>,
    /// Trust domain of workload SPIFFE identities [default: trellis.local]
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// The API's server certificate chain and key (PEM), instead of one issued by the
    /// management server's own API CA.
    #[arg(long)]
    pub api_tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub api_tls_key: Option<PathBuf>,
    /// The CA clients should trust for --api-tls-cert (written into the admin client config).
    #[arg(long)]
    pub api_tls_ca: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the generated API certificate; repeatable.
    #[arg(long = "api-server-name")]
    pub api_server_names: Vec<String>,
    /// Accept client certificates signed by this CA (PEM): the user is the subject CN, the
    /// groups its O entries.
    #[arg(long)]
    pub api_client_ca: Option<PathBuf>,
    /// Serve the API over plain HTTP. For demos only: bearer tokens then cross the network in clear.
    #[arg(long)]
    pub api_insecure_plaintext: bool,
    /// OIDC issuer URL whose ID tokens the API accepts (its discovery document and keys are fetched).
    #[arg(long)]
    pub oidc_issuer: Option<String>,
    /// The audience (client id) an ID token must carry.
    #[arg(long)]
    pub oidc_audience: Option<String>,
    /// The claim naming the user [default: sub]
    #[arg(long)]
    pub oidc_username_claim: Option<String>,
    /// The claim listing the user's groups [default: groups]
    #[arg(long)]
    pub oidc_groups_claim: Option<String>,
    /// A private CA to trust for the OIDC issuer (besides the system's).
    #[arg(long)]
    pub oidc_ca_file: Option<PathBuf>,
    /// The client secret (a file, mode 0600) of the --oidc-audience client: turns on the web
    /// UI's login (authorization code flow with PKCE) against --oidc-issuer.
    #[arg(long)]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The address browsers reach the UI at, registered at the provider as
    /// `<ui-url>/ui/callback` [default: the API's own address]
    #[arg(long)]
    pub ui_url: Option<String>,
    /// Keep UI login sessions in this Redis (`redis://host:port/db` or `rediss://` for TLS), so
    /// they survive restarts and are shared by replicas [default: in memory]
    #[arg(long)]
    pub ui_session_redis: Option<String>,
    /// A Prometheus whose scrapes of the proxies give the UI's live request rates, errors and
    /// latencies (`http://host:9090`).
    #[arg(long)]
    pub prometheus_url: Option<String>,
    /// Audit records kept at most [default: 10000]
    #[arg(long)]
    pub audit_max_records: Option<u64>,
    /// Audit records older than this are dropped [default: 720h]
    #[arg(long)]
    pub audit_max_age: Option<String>,
    /// OTLP/gRPC collector (host:port) that receives this server's spans (apply, translate,
    /// relay pushes); none: spans are only logged. Flag or environment only, not --config:
    /// export starts before the file is read.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<trellis_support::span_export::OtlpEndpoint>,
    /// The management cluster's name, as the `trellis.cluster.name` attribute of exported spans.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// `production` makes `trellis check` treat demo conveniences (generated self-signed CAs,
    /// plaintext listeners) as errors [default: dev]
    #[arg(long)]
    pub profile: Option<String>,
    /// FIPS-validated cryptography is required here: `trellis insights` reports an error while
    /// this build's (ring) is not.
    #[arg(long)]
    pub require_fips: bool,
    /// The workload cluster this management server runs in, if it shares one (insight TRL0001).
    #[arg(long)]
    pub colocated_cluster: Option<String>,
    /// The rate limiter's Redis was started by the platform as a demo convenience (as `trellis
    /// up` does), not an operated one.
    #[arg(long)]
    pub builtin_redis: bool,
    /// Metrics go to a Prometheus the platform started as a demo convenience.
    #[arg(long)]
    pub builtin_prometheus: bool,
    /// Where accepted config lives: `redb` (a file in --data-dir, one server), `etcd` (shared by
    /// several replicas: one leads, all serve the relay and API) or `kubernetes` (shared through
    /// the management cluster's API server, as Secrets in --leader-election-namespace; needs
    /// --kubeconfig or --kubernetes) [default: redb]
    #[arg(long)]
    pub store: Option<String>,
    /// etcd client URLs, comma-separated (`https://host:2379`; `http://` on loopback only)
    #[arg(long)]
    pub etcd_endpoints: Option<String>,
    /// PEM CA bundle that signed etcd's serving certificate
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's --client-cert-auth (with --etcd-key)
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// Prefix of every key Trellis writes in etcd [default: /trellis/]
    #[arg(long)]
    pub etcd_prefix: Option<String>,
    /// This replica's name in the leader election [default: the relay address]
    #[arg(long)]
    pub replica_name: Option<String>,
    /// Watch the Gloo resources of this Kubernetes cluster (`kubectl apply`) into the store and
    /// write their status; the kubeconfig of the management cluster
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// As --kubeconfig, with the pod's in-cluster configuration
    #[arg(long)]
    pub kubernetes: bool,
    /// The image the sidecar injector (`/api/v1/admission/inject`) adds to pods [default:
    /// trellis:<this release>]
    #[arg(long)]
    pub injection_image: Option<String>,
    /// How replicas on etcd elect their leader: `etcd` (a lease in the store) or `kubernetes`
    /// (a coordination.k8s.io Lease; needs --kubeconfig or --kubernetes) [default: kubernetes
    /// when the server watches a Kubernetes cluster, else etcd]
    #[arg(long)]
    pub leader_election: Option<String>,
    /// Namespace of the leader election's Lease, and of the store's Secrets with --store
    /// kubernetes [default: trellis]
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    api_addr: Option<SocketAddr>,
    relay_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    insecure: Option<bool>,
    relay_authority: Option<String>,
    disable_ca: Option<bool>,
    disable_ca_cert_generation: Option<bool>,
    relay_root_ca: Option<PathBuf>,
    relay_signing_cert: Option<PathBuf>,
    relay_signing_key: Option<PathBuf>,
    relay_server_cert: Option<PathBuf>,
    relay_server_key: Option<PathBuf>,
    client_cert_ttl: Option<String>,
    token_ttl: Option<String>,
    mesh_root_cert: Option<PathBuf>,
    mesh_root_key: Option<PathBuf>,
    intermediate_ttl: Option<String>,
    trust_domain: Option<String>,
    api_tls_cert: Option<PathBuf>,
    api_tls_key: Option<PathBuf>,
    api_tls_ca: Option<PathBuf>,
    #[serde(default)]
    api_server_names: Vec<String>,
    api_client_ca: Option<PathBuf>,
    api_insecure_plaintext: Option<bool>,
    oidc_issuer: Option<String>,
    oidc_audience: Option<String>,
    oidc_username_claim: Option<String>,
    oidc_groups_claim: Option<String>,
    oidc_ca_file: Option<PathBuf>,
    oidc_client_secret_file: Option<PathBuf>,
    ui_url: Option<String>,
    ui_session_redis: Option<String>,
    prometheus_url: Option<String>,
    audit_max_records: Option<u64>,
    audit_max_age: Option<String>,
    profile: Option<String>,
    require_fips: Option<bool>,
    colocated_cluster: Option<String>,
    builtin_redis: Option<bool>,
    builtin_prometheus: Option<bool>,
    store: Option<String>,
    etcd_endpoints: Option<String>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    etcd_prefix: Option<String>,
    replica_name: Option<String>,
    kubeconfig: Option<PathBuf>,
    kubernetes: Option<bool>,
    injection_image: Option<String>,
    leader_election: Option<String>,
    leader_election_namespace: Option<String>,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreChoice {
    Redb,
    Etcd(EtcdSettings),
    /// The management cluster's API server: a log of Secrets in the leader election's
    /// namespace, replayed by every replica (trellis-kube's store).
    Kubernetes {
        replica_name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
    pub prefix: String,
    pub replica_name: String,
}

impl EtcdSettings {
    /// Reads the certificate files: what the etcd client needs.
    pub fn client_config(&self) -> anyhow::Result<trellis_etcd::EtcdConfig> {
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read --{flag} {}", path.display()))
        };
        Ok(trellis_etcd::EtcdConfig {
            endpoints: self.endpoints.clone(),
            ca_pem: self.ca.as_ref().map(|p| read(p, "etcd-ca")).transpose()?,
            client_identity: match &self.client {
                Some((cert, key)) => Some((read(cert, "etcd-cert")?, read(key, "etcd-key")?)),
                None => None,
            },
            prefix: self.prefix.clone(),
            timeout: Duration::from_secs(5),
        })
    }
}

/// The etcd settings of the flags and file, checked: an endpoint off this host must use TLS.
fn store_choice(
    store: Option<String>,
    endpoints: Option<String>,
    ca: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    prefix: Option<String>,
    replica_name: String,
) -> anyhow::Result<StoreChoice> {
    match store.as_deref().unwrap_or("redb") {
        "redb" => {
            if endpoints.is_some() {
                anyhow::bail!("--etcd-endpoints is given but --store is redb: add --store etcd");
            }
            Ok(StoreChoice::Redb)
        }
        "etcd" => {
            let endpoints: Vec<String> = endpoints
                .unwrap_or_default()
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            if endpoints.is_empty() {
                anyhow::bail!("--store etcd needs --etcd-endpoints (https://host:2379,...)");
            }
            for endpoint in &endpoints {
                let loopback = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                    .iter()
                    .any(|p| endpoint.starts_with(p));
                if !(endpoint.starts_with("https://") || loopback) {
                    anyhow::bail!(
                        "--etcd-endpoints {endpoint}: use https:// (the store holds tokens and certificates records); plain http:// only on loopback"
                    );
                }
            }
            let prefix = prefix.unwrap_or_else(|| "/trellis/".into());
            if !prefix.ends_with('/') {
                anyhow::bail!("--etcd-prefix {prefix}: end it with '/'");
            }
            Ok(StoreChoice::Etcd(EtcdSettings {
                endpoints,
                ca,
                client,
                prefix,
                replica_name,
            }))
        }
        "kubernetes" => {
            if endpoints.is_some() {
                anyhow::bail!("--etcd-endpoints is given but --store is kubernetes: drop one");
            }
            Ok(StoreChoice::Kubernetes { replica_name })
        }
        other => anyhow::bail!("--store {other}: use redb, etcd or kubernetes"),
    }
}

/// How replicas elect their leader.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaderElection {
    /// A lease in the etcd store.
    Etcd,
    /// A coordination.k8s.io/v1 Lease in this namespace.
    Kubernetes { namespace: String },
}

/// Where Kubernetes resources come from, if anywhere.
#[derive(Debug, Clone, PartialEq)]
pub enum KubernetesSource {
    Kubeconfig(PathBuf),
    InCluster,
}

impl KubernetesSource {
    /// The kubeconfig file; `None`: the pod's in-cluster configuration.
    pub fn kubeconfig(&self) -> Option<&std::path::Path> {
        match self {
            KubernetesSource::Kubeconfig(path) => Some(path.as_path()),
            KubernetesSource::InCluster => None,
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct MgmtConfig {
    pub store: StoreChoice,
    pub kubernetes: Option<KubernetesSource>,
    pub injection_image: String,
    pub leader_election: LeaderElection,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub relay_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub insecure: bool,
    pub relay_authority: String,
    pub disable_ca: bool,
    pub disable_ca_cert_generation: bool,
    pub relay_root_ca: Option<PathBuf>,
    pub relay_signing: Option<(PathBuf, PathBuf)>,
    pub relay_server: Option<(PathBuf, PathBuf)>,
    pub client_cert_ttl: Duration,
    pub token_ttl: Duration,
    pub mesh_root: Option<(PathBuf, PathBuf)>,
    pub intermediate_ttl: Duration,
    pub trust_domain: String,
    pub api_tls: Option<(PathBuf, PathBuf)>,
    pub api_tls_ca: Option<PathBuf>,
    pub api_server_names: Vec<String>,
    pub api_client_ca: Option<PathBuf>,
    pub api_insecure_plaintext: bool,
    pub oidc: Option<OidcConfig>,
    pub ui: UiConfig,
    pub audit_retention: trellis_store::AuditRetention,
    /// `--profile production`.
    pub production: bool,
    /// What insights need to know that the server cannot see for itself.
    pub declared: Declared,
}

/// Facts about the deployment the operator declares (flags), for insights.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub require_fips: bool,
    pub colocated_cluster: Option<String>,
    pub builtin_redis: bool,
    pub builtin_prometheus: bool,
}

/// The operator's OpenID provider, whose ID tokens the API accepts.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    pub username_claim: String,
    pub groups_claim: String,
    pub ca_file: Option<PathBuf>,
}

/// The web UI: where browsers reach it, its login and where its live metrics come from.
#[derive(Debug, Clone, Default)]
pub struct UiConfig {
    /// `scheme://host[:port]`, no trailing slash.
    pub url: String,
    pub client_secret_file: Option<PathBuf>,
    pub session_redis: Option<String>,
    pub prometheus_url: Option<String>,
}

fn pair(cert: Option<PathBuf>, key: Option<PathBuf>, what: &str) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("give both --{what}-cert and --{what}-key, or neither"),
    }
}

impl MgmtArgs {
    pub fn resolve(self) -> anyhow::Result<MgmtConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let duration =
            |flag: Option<String>, file: Option<String>, default: &str, name: &str| -> anyhow::Result<Duration> {
                let text = flag.or(file).unwrap_or_else(|| default.to_string());
                parse_duration(&text).with_context(|| format!("--{name} {text}"))
            };
        let relay_addr_for_name = self
            .relay_addr
            .or(file.relay_addr)
            .unwrap_or_else(|| "127.0.0.1:9900".parse().expect("address"));
        let kubeconfig = self.kubeconfig.or(file.kubeconfig);
        let in_cluster = self.kubernetes || file.kubernetes.unwrap_or(false);
        let watches_kubernetes = kubeconfig.is_some() || in_cluster;
        let leader_election = match self.leader_election.or(file.leader_election).as_deref() {
            Some("etcd") => LeaderElection::Etcd,
            Some("kubernetes") if !watches_kubernetes => {
                anyhow::bail!("--leader-election kubernetes needs --kubeconfig or --kubernetes")
            }
            Some("kubernetes") => LeaderElection::Kubernetes {
                namespace: self
                    .leader_election_namespace
                    .clone()
                    .or(file.leader_election_namespace.clone())
                    .unwrap_or_else(|| "trellis".into()),
            },
            None if watches_kubernetes => LeaderElection::Kubernetes {
                namespace: self
                    .leader_election_namespace
                    .clone()
                    .or(file.leader_election_namespace.clone())
                    .unwrap_or_else(|| "trellis".into()),
            },
            None => LeaderElection::Etcd,
            Some(other) => anyhow::bail!("--leader-election {other}: use etcd or kubernetes"),
        };
        let mut config = MgmtConfig {
            leader_election,
            injection_image: self
                .injection_image
                .or(file.injection_image)
                .unwrap_or_else(|| format!("trellis:{}", env!("CARGO_PKG_VERSION"))),
            kubernetes: match (kubeconfig, in_cluster) {
                (Some(_), true) => anyhow::bail!("give --kubeconfig or --kubernetes, not both"),
                (Some(path), false) => Some(KubernetesSource::Kubeconfig(path)),
                (None, true) => Some(KubernetesSource::InCluster),
                (None, false) => None,
            },
            store: store_choice(
                self.store.or(file.store),
                self.etcd_endpoints.or(file.etcd_endpoints),
                self.etcd_ca.or(file.etcd_ca),
                pair(
                    self.etcd_cert.or(file.etcd_cert),
                    self.etcd_key.or(file.etcd_key),
                    "etcd",
                )?,
                self.etcd_prefix.or(file.etcd_prefix),
                self.replica_name
                    .or(file.replica_name)
                    .unwrap_or_else(|| relay_addr_for_name.to_string()),
            )?,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(".trellis/mgmt")),
            api_addr: self
                .api_addr
                .or(file.api_addr)
                .unwrap_or_else(|| "127.0.0.1:8090".parse().expect("address")),
            relay_addr: self
                .relay_addr
                .or(file.relay_addr)
                .unwrap_or_else(|| "127.0.0.1:9900".parse().expect("address")),
            admin_addr: self
                .admin_addr
                .or(file.admin_addr)
                .unwrap_or_else(|| "127.0.0.1:9091".parse().expect("address")),
            insecure: self.insecure || file.insecure.unwrap_or(false),
            relay_authority: self
                .relay_authority
                .or(file.relay_authority)
                .unwrap_or_else(|| "trellis-mgmt.trellis".into()),
            disable_ca: self.disable_ca || file.disable_ca.unwrap_or(false),
            disable_ca_cert_generation: self.disable_ca_cert_generation
                || file.disable_ca_cert_generation.unwrap_or(false),
            relay_root_ca: self.relay_root_ca.or(file.relay_root_ca),
            relay_signing: pair(
                self.relay_signing_cert.or(file.relay_signing_cert),
                self.relay_signing_key.or(file.relay_signing_key),
                "relay-signing",
            )?,
            relay_server: pair(
                self.relay_server_cert.or(file.relay_server_cert),
                self.relay_server_key.or(file.relay_server_key),
                "relay-server",
            )?,
            client_cert_ttl: duration(self.client_cert_ttl, file.client_cert_ttl, "24h", "client-cert-ttl")?,
            token_ttl: duration(self.token_ttl, file.token_ttl, "1h", "token-ttl")?,
            mesh_root: pair(
                self.mesh_root_cert.or(file.mesh_root_cert),
                self.mesh_root_key.or(file.mesh_root_key),
                "mesh-root",
            )?,
            intermediate_ttl: duration(self.intermediate_ttl, file.intermediate_ttl, "720h", "intermediate-ttl")?,
            trust_domain: self
                .trust_domain
                .or(file.trust_domain)
                .unwrap_or_else(|| trellis_model::DEFAULT_TRUST_DOMAIN.into()),
            api_tls: pair(
                self.api_tls_cert.or(file.api_tls_cert),
                self.api_tls_key.or(file.api_tls_key),
                "api-tls",
            )?,
            api_tls_ca: self.api_tls_ca.or(file.api_tls_ca),
            api_server_names: if self.api_server_names.is_empty() {
                file.api_server_names
            } else {
                self.api_server_names
            },
            api_client_ca: self.api_client_ca.or(file.api_client_ca),
            api_insecure_plaintext: self.api_insecure_plaintext || file.api_insecure_plaintext.unwrap_or(false),
            oidc: match (
                self.oidc_issuer.or(file.oidc_issuer),
                self.oidc_audience.or(file.oidc_audience),
            ) {
                (Some(issuer), Some(audience)) => Some(OidcConfig {
                    issuer,
                    audience,
                    username_claim: self
                        .oidc_username_claim
                        .or(file.oidc_username_claim)
                        .unwrap_or_else(|| "sub".into()),
                    groups_claim: self
                        .oidc_groups_claim
                        .or(file.oidc_groups_claim)
                        .unwrap_or_else(|| "groups".into()),
                    ca_file: self.oidc_ca_file.or(file.oidc_ca_file),
                }),
                (None, None) => None,
                _ => anyhow::bail!("give both --oidc-issuer and --oidc-audience, or neither"),
            },
            ui: UiConfig {
                url: self
                    .ui_url
                    .or(file.ui_url)
                    .map(|url| url.trim_end_matches('/').to_string())
                    .unwrap_or_default(),
                client_secret_file: self.oidc_client_secret_file.or(file.oidc_client_secret_file),
                session_redis: self.ui_session_redis.or(file.ui_session_redis),
                prometheus_url: self
                    .prometheus_url
                    .or(file.prometheus_url)
                    .map(|url| url.trim_end_matches('/').to_string()),
            },
            production: match self.profile.or(file.profile).as_deref() {
                None | Some("dev") => false,
                Some("production") => true,
                Some(other) => anyhow::bail!("--profile {other}: use dev or production"),
            },
            declared: Declared {
                require_fips: self.require_fips || file.require_fips.unwrap_or(false),
                colocated_cluster: self.colocated_cluster.or(file.colocated_cluster),
                builtin_redis: self.builtin_redis || file.builtin_redis.unwrap_or(false),
                builtin_prometheus: self.builtin_prometheus || file.builtin_prometheus.unwrap_or(false),
            },
            audit_retention: trellis_store::AuditRetention {
                max_records: self.audit_max_records.or(file.audit_max_records).unwrap_or(10_000),
                max_age_secs: duration(self.audit_max_age, file.audit_max_age, "720h", "audit-max-age")?.as_secs(),
            },
        };
        if config.ui.url.is_empty() {
            let scheme = if config.api_insecure_plaintext { "http" } else { "https" };
            config.ui.url = format!("{scheme}://{}", config.api_addr);
        }
        config.validate()?;
        Ok(config)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --config {}", path.display()))?;
    yaml_serde::from_str(&text).with_context(|| format!("--config {}", path.display()))
}

impl MgmtConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if let StoreChoice::Kubernetes { .. } = &self.store {
            anyhow::ensure!(
                self.kubernetes.is_some(),
                "--store kubernetes needs the management cluster: add --kubeconfig FILE, or --kubernetes in a pod"
            );
            anyhow::ensure!(
                matches!(self.leader_election, LeaderElection::Kubernetes { .. }),
                "--store kubernetes elects its leader with a Kubernetes Lease: drop --leader-election etcd"
            );
        }
        // Bearer tokens over plain HTTP are only tolerable where nobody else can listen.
        anyhow::ensure!(
            !self.api_insecure_plaintext || self.api_addr.ip().is_loopback(),
            "--api-insecure-plaintext with --api-addr {}: plain HTTP would send tokens across the network in clear; serve HTTPS (drop the flag) or listen on loopback",
            self.api_addr
        );
        if let Some(oidc) = &self.oidc {
            let host = oidc
                .issuer
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|u| u.host().map(str::to_string));
            let loopback = host.is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            anyhow::ensure!(
                oidc.issuer.starts_with("https://") || loopback,
                "--oidc-issuer {}: use https (plain http only for a provider on loopback): the provider's keys decide who is admin",
                oidc.issuer
            );
        }
        anyhow::ensure!(
            self.ui.client_secret_file.is_none() || self.oidc.is_some(),
            "--oidc-client-secret-file needs --oidc-issuer and --oidc-audience: the UI logs users in at that provider"
        );
        for (flag, url) in [
            ("--ui-url", Some(&self.ui.url)),
            ("--prometheus-url", self.ui.prometheus_url.as_ref()),
        ] {
            if let Some(url) = url {
                anyhow::ensure!(
                    (url.starts_with("https://") || url.starts_with("http://")) && url.len() > "http://".len(),
                    "{flag} {url:?}: an absolute http(s) URL, such as https://mgmt.example.com:8090"
                );
            }
        }
        if self.insecure {
            anyhow::ensure!(
                !self.disable_ca && !self.disable_ca_cert_generation,
                "--insecure runs without certificates: it cannot be combined with --disable-ca or --disable-ca-cert-generation"
            );
            return Ok(());
        }
        if self.disable_ca {
            anyhow::ensure!(
                self.relay_root_ca.is_some(),
                "--disable-ca needs --relay-root-ca: the CA that signed the agents' client certificates"
            );
            anyhow::ensure!(
                self.relay_server.is_some(),
                "--disable-ca needs --relay-server-cert and --relay-server-key"
            );
        }
        if self.disable_ca_cert_generation && !self.disable_ca {
            anyhow::ensure!(
                self.relay_root_ca.is_some() && self.relay_signing.is_some() && self.relay_server.is_some(),
                "--disable-ca-cert-generation needs --relay-root-ca, --relay-signing-cert/--relay-signing-key and --relay-server-cert/--relay-server-key"
            );
        }
        anyhow::ensure!(
            !self.relay_authority.is_empty() && !self.relay_authority.contains('_'),
            "--relay-authority {:?}: use a DNS name without underscores (it goes into a certificate SAN)",
            self.relay_authority
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("trellis-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mgmt.yaml");
        std::fs::write(
            &file,
            "apiAddr: 127.0.0.1:1111\nrelayAuthority: relay.example\ntokenTtl: 10m\n",
        )
        .unwrap();
        let args = MgmtArgs {
            config: Some(file.clone()),
            api_addr: Some("127.0.0.1:2222".parse().unwrap()),
            ..Default::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.api_addr.port(), 2222);
        assert_eq!(config.relay_authority, "relay.example");
        assert_eq!(config.token_ttl, Duration::from_secs(600));
        assert_eq!(config.relay_addr.port(), 9900);

        std::fs::write(&file, "apiAdress: 127.0.0.1:1111\n").unwrap();
        let error = MgmtArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{error:#}").contains("unknown field `apiAdress`"), "{error:#}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn production_options_need_their_files() {
        let cases: &[(MgmtArgs, &str)] = &[
            (
                MgmtArgs {
                    disable_ca: true,
                    ..Default::default()
                },
                "--disable-ca needs --relay-root-ca",
            ),
            (
                MgmtArgs {
                    disable_ca_cert_generation: true,
                    ..Default::default()
                },
                "--disable-ca-cert-generation needs",
            ),
            (
                MgmtArgs {
                    insecure: true,
                    disable_ca: true,
                    ..Default::default()
                },
                "cannot be combined",
            ),
            (
                MgmtArgs {
                    relay_authority: Some("bad_name".into()),
                    ..Default::default()
                },
                "without underscores",
            ),
            (
                MgmtArgs {
                    api_insecure_plaintext: true,
                    api_addr: Some("0.0.0.0:8090".parse().unwrap()),
                    ..Default::default()
                },
                "plain HTTP would send tokens",
            ),
            (
                MgmtArgs {
                    oidc_issuer: Some("https://idp.example".into()),
                    ..Default::default()
                },
                "give both --oidc-issuer and --oidc-audience",
            ),
            (
                MgmtArgs {
                    oidc_issuer: Some("http://127.0.0.1.evil.example".into()),
                    oidc_audience: Some("cli".into()),
                    ..Default::default()
                },
                "use https",
            ),
            (
                MgmtArgs {
                    profile: Some("prod".into()),
                    ..Default::default()
                },
                "use dev or production",
            ),
            (
                MgmtArgs {
                    store: Some("kubernetes".into()),
                    ..Default::default()
                },
                "--store kubernetes needs the management cluster",
            ),
            (
                MgmtArgs {
                    store: Some("kubernetes".into()),
                    kubeconfig: Some("kubeconfig".into()),
                    leader_election: Some("etcd".into()),
                    ..Default::default()
                },
                "elects its leader with a Kubernetes Lease",
            ),
            (
                MgmtArgs {
                    relay_server_cert: Some("x".into()),
                    ..Default::default()
                },
                "give both --relay-server-cert",
            ),
        ];
        for (args, message) in cases {
            let error = args.clone().resolve().unwrap_err().to_string();
            assert!(error.contains(message), "{args:?}: {error}");
        }
    }
}
