//! A real Prometheus (Debian's `prometheus`, installed by scripts/setup) scraping a demo mesh
//! every second: the management server's admin port, and each sidecar's Envoy stats labelled
//! with its app (what Kubernetes service discovery would attach from the pod's labels).

use std::time::Duration;

use trellis_cli::up::LocalMesh;
use trellis_support::process::free_port;

pub struct Prometheus {
    _child: tokio::process::Child,
    pub port: u16,
}

impl Prometheus {
    /// Scrapes `mesh`; `sidecars` are (app label, process name) pairs of its apps.
    pub fn scrape(mesh: &LocalMesh, sidecars: &[(&str, &str)]) -> Prometheus {
        Self::scrape_on(mesh, free_port(), sidecars)
    }

    /// [`Prometheus::scrape`] listening on `port`.
    pub fn scrape_on(mesh: &LocalMesh, port: u16, sidecars: &[(&str, &str)]) -> Prometheus {
        assert!(
            std::process::Command::new("prometheus")
                .arg("--version")
                .output()
                .is_ok(),
            "prometheus is not installed: scripts/setup installs Debian's package"
        );
        let targets: Vec<String> = sidecars
            .iter()
            .map(|(app, process)| {
                format!(
                    "\x20 - {{targets: ['127.0.0.1:{}'], labels: {{app: {app}}}}}\n",
                    mesh.app(process).admin_port
                )
            })
            .collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: trellis-mgmt\n\
             \x20 static_configs: [{{targets: ['127.0.0.1:{}']}}]\n\
             - job_name: envoy-sidecars\n\
             \x20 metrics_path: /stats/prometheus\n\
             \x20 static_configs:\n{}",
            mesh.admin_port,
            targets.concat()
        );
        let dir = mesh.dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let child = crate::spawn_program(
            "prometheus",
            &[
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            &mesh.dir.join("logs").join("prometheus.log"),
        );
        Prometheus { _child: child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of an instant query that yields one sample; `None` while it yields none (or NaN).
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url(),
            trellis_cli::client::encode(promql)
        );
        let response = trellis_support::httpc::get(&url, Duration::from_secs(5)).await.ok()?;
        let body: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        assert_eq!(body["status"], "success", "{promql}: {}", response.body);
        let value = body["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
        value.is_finite().then_some(value)
    }

    /// Polls `promql` until `holds` accepts its value; fails after 60 s with the last value.
    pub async fn until(&self, promql: &str, what: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            last = self.query(promql).await.or(last);
            if let Some(value) = last.filter(|v| holds(*v)) {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: `{promql}` was {last:?} after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
