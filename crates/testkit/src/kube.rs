//! A real kube-apiserver (built once by scripts/setup into the peers cache) on a loopback
//! ephemeral port, backed by the test's etcd over TLS, with token authentication and RBAC.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use trellis_cli::api_client::ApiClient;
use trellis_support::process::free_port;

use crate::etcd::Etcd;

/// A peer scripts/setup builds from its Go module into `${XDG_CACHE_HOME:-~/.cache}/trellis-peers`.
pub fn peer(name: &str) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    let path = cache.join("trellis-peers").join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/setup builds {name} once from its Go module",
        path.display()
    );
    path
}

/// Runs the real kubectl (built by scripts/setup) with `kubeconfig`, `args` and `stdin`; returns
/// whether it succeeded and what it printed (stdout, then stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(peer("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Runs the real helm (built by scripts/setup) with `args`; returns whether it succeeded and
/// what it printed (stdout, then stderr).
pub fn helm(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(peer("helm"))
        .args(args)
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The chart `name` of this repository.
pub fn chart(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts")
        .join(name)
}

/// This host's first IPv4 address off loopback: Kubernetes refuses loopback endpoint addresses,
/// so processes standing in for pods listen there.
pub fn host_address() -> String {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback() && !ip.is_link_local())
        })
        .expect("this host has an IPv4 address off loopback")
        .to_string()
}

pub struct KubeApiServer {
    _child: tokio::process::Child,
    pub port: u16,
    pub token: String,
    pub ca_file: PathBuf,
}

impl KubeApiServer {
    /// Starts kube-apiserver on `etcd` (its keys under `/registry-<name>`) and waits until it is ready.
    pub async fn start(dir: &Path, etcd: &Etcd) -> KubeApiServer {
        Self::start_with(dir, etcd, &[]).await
    }

    /// [`KubeApiServer::start`] with `extra` flags.
    pub async fn start_with(dir: &Path, etcd: &Etcd, extra: &[String]) -> KubeApiServer {
        std::fs::create_dir_all(dir).unwrap();
        let (now, day) = (SystemTime::now(), Duration::from_secs(86400));
        let serving = etcd
            .ca
            .issue_server_cert(&["127.0.0.1".into(), "localhost".into()], day, now)
            .unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let cert = write("apiserver.pem", &serving.cert_pem);
        let key = write("apiserver.key", &serving.key.0);
        // The service-account signing key (ECDSA serves as well as RSA); the API server reads its
        // public half from a certificate.
        let sa = etcd
            .ca
            .issue_server_cert(&["service-accounts".into()], day, now)
            .unwrap();
        let sa_key = write("sa.key", &sa.key.0);
        let sa_public = write("sa.pem", &sa.cert_pem);
        let token = format!("admin-{}", std::process::id());
        let tokens = write("tokens.csv", &format!("{token},admin,admin,system:masters\n"));
        let port = free_port();
        let mut args: Vec<String> = vec![
            format!("--etcd-servers={}", etcd.endpoint()),
            format!("--etcd-cafile={}", etcd.ca_file.display()),
            format!("--etcd-certfile={}", etcd.client_cert_file.display()),
            format!("--etcd-keyfile={}", etcd.client_key_file.display()),
            format!("--etcd-prefix=/registry-{}", dir.file_name().unwrap().to_string_lossy()),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--cert-dir={}", dir.join("certs").display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", sa_public.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
        ];
        args.extend(extra.iter().cloned());
        let child = crate::spawn_program(
            peer("kube-apiserver").to_str().unwrap(),
            &args,
            &dir.join("kube-apiserver.log"),
        );
        let server = KubeApiServer {
            _child: child,
            port,
            token,
            ca_file: etcd.ca_file.clone(),
        };
        let client = server.client();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(response) = client.get("/readyz").await
                && response.status == 200
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90 s: see {}",
                dir.join("kube-apiserver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Writes a kubeconfig for the cluster admin at `path` (what `--kubeconfig` reads).
    pub fn write_kubeconfig(&self, path: &Path) {
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n",
            self.url(),
            self.ca_file.display(),
            self.token
        );
        std::fs::write(path, config).unwrap();
    }

    /// Creates every Gloo CRD and waits until the API server serves them.
    pub async fn install_crds(&self) {
        for crd in trellis_kube::crds::custom_resource_definitions() {
            let response = self.create(&crd, false).await;
            assert_eq!(response.status, 201, "{}: {}", crd["metadata"]["name"], response.body);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for crd in trellis_kube::crds::custom_resource_definitions() {
            let path = format!(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}",
                crd["metadata"]["name"].as_str().unwrap()
            );
            loop {
                let body = self.client().get_json(&path).await.unwrap();
                let established = body["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "{path} not established: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API as the cluster admin.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.url(), Some(&self.ca_file), Some(self.token.clone())).unwrap()
    }

    /// Creates `object` (JSON); with `dry_run` the server validates and admits it without
    /// storing it, as `kubectl apply --dry-run=server` does.
    pub async fn create(&self, object: &serde_json::Value, dry_run: bool) -> trellis_support::httpc::Response {
        let mut path = collection_path(object);
        if dry_run {
            path.push_str("?dryRun=All&fieldValidation=Strict");
        } else {
            path.push_str("?fieldValidation=Strict");
        }
        self.client()
            .request(
                "POST",
                &path,
                Some(("application/json", serde_json::to_vec(object).unwrap())),
            )
            .await
            .unwrap()
    }
}

/// The REST collection an object is created in (the kinds Trellis's charts render).
pub fn collection_path(object: &serde_json::Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let group = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let plural = format!("{}s", kind.to_lowercase());
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ]
    .contains(&kind);
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) if !cluster_scoped => format!("{group}/namespaces/{namespace}/{plural}"),
        _ => format!("{group}/{plural}"),
    }
}
