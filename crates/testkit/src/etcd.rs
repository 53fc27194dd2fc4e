//! A real etcd (Debian's `etcd-server`, installed by scripts/setup) on loopback ephemeral ports,
//! serving TLS and requiring client certificates, as a production etcd does; limits raised so
//! one apply of a few thousand resources fits one transaction.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use trellis_support::process::free_port;

pub struct Etcd {
    child: Option<tokio::process::Child>,
    pub port: u16,
    peer_port: u16,
    pub dir: PathBuf,
    /// The CA that signed etcd's certificate and the clients'.
    pub ca: trellis_pki::Authority,
    pub ca_file: PathBuf,
    /// A client certificate etcd accepts.
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
}

impl Etcd {
    /// Starts etcd in `dir` and waits until it accepts connections.
    pub async fn start(dir: &Path) -> Etcd {
        std::fs::create_dir_all(dir).unwrap();
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();
        let ca = trellis_pki::Authority::generate_root("test etcd CA", hour, now).unwrap();
        let server = ca.issue_server_cert(&["127.0.0.1".to_string()], hour, now).unwrap();
        let (key, csr) = trellis_pki::new_key_and_csr("trellis-mgmt").unwrap();
        let client = ca
            .sign_client_csr(&csr, "spiffe://test/etcd-client", "trellis-mgmt", hour, now)
            .unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let ca_file = write("ca.pem", &ca.root_pem());
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key.0);
        let client_cert_file = write("client.pem", &client);
        let client_key_file = write("client.key", &key.0);
        let mut etcd = Etcd {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            dir: dir.to_path_buf(),
            ca,
            ca_file,
            client_cert_file,
            client_key_file,
        };
        etcd.run().await;
        etcd
    }

    async fn run(&mut self) {
        let dir = &self.dir;
        let (client, peer) = (
            format!("https://127.0.0.1:{}", self.port),
            format!("http://127.0.0.1:{}", self.peer_port),
        );
        let args: Vec<String> = [
            "--name=test".to_string(),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=test={peer}"),
            format!("--cert-file={}", dir.join("server.pem").display()),
            format!("--key-file={}", dir.join("server.key").display()),
            format!("--trusted-ca-file={}", self.ca_file.display()),
            "--client-cert-auth".to_string(),
            "--max-txn-ops=100000".to_string(),
            "--max-request-bytes=33554432".to_string(),
        ]
        .to_vec();
        self.child = Some(crate::spawn_program("etcd", &args, &dir.join("etcd.log")));
        crate::wait_for_port(self.port, Duration::from_secs(30)).await;
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// How a client with the test's certificate reaches this etcd, keys under `prefix`.
    pub fn config(&self, prefix: &str) -> trellis_etcd::EtcdConfig {
        trellis_etcd::EtcdConfig {
            endpoints: vec![self.endpoint()],
            ca_pem: Some(std::fs::read_to_string(&self.ca_file).unwrap()),
            client_identity: Some((
                std::fs::read_to_string(&self.client_cert_file).unwrap(),
                std::fs::read_to_string(&self.client_key_file).unwrap(),
            )),
            prefix: prefix.to_string(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The `trellis mgmt` flags that put its store on this etcd.
    pub fn mgmt_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            self.endpoint(),
            "--etcd-ca".into(),
            self.ca_file.display().to_string(),
            "--etcd-cert".into(),
            self.client_cert_file.display().to_string(),
            "--etcd-key".into(),
            self.client_key_file.display().to_string(),
            "--etcd-prefix".into(),
            prefix.into(),
        ]
    }

    /// Stops etcd (SIGKILL) and starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.run().await;
    }
}

impl Drop for Etcd {
    /// Stops etcd and removes its data (a preallocated write-ahead log of 64 MB per test would
    /// fill a CI disk); the log and certificates stay for a failed test's reader.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}
