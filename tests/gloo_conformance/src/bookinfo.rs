//! The mesh Gloo's guides assume, on real processes: two clusters (`cluster-1`, `cluster-2`),
//! bookinfo's services in namespace `bookinfo` on port 9080 (each workload labelled `app` and
//! `version`, its service account named after its service), and, on demand, Gloo's ingress
//! gateway (`istio-ingressgateway` in `gloo-mesh-gateways`, labelled `istio: ingressgateway` and
//! `app: istio-ingressgateway`).
//!
//! ```text
//!  cluster-1: productpage v1, details v1, reviews v1 and v2, ratings v1
//!  cluster-2: reviews v3, ratings v1
//! ```
//!
//! Every answer comes from `trellis demo-app`, a JSON body naming the service, version and
//! cluster that answered, the method, path, query and the request headers as they arrived.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use trellis_cli::up::{AppSpec, LocalMesh, MeshOptions};
use trellis_support::httpc;

/// The bookinfo namespace and the port every service listens on.
pub const NAMESPACE: &str = "bookinfo";
pub const PORT: u16 = 9080;

/// (process name, service, version, cluster) of every bookinfo workload.
pub const WORKLOADS: [(&str, &str, &str, &str); 7] = [
    ("productpage", "productpage", "v1", "cluster-1"),
    ("details", "details", "v1", "cluster-1"),
    ("reviews-v1", "reviews", "v1", "cluster-1"),
    ("reviews-v2", "reviews", "v2", "cluster-1"),
    ("ratings", "ratings", "v1", "cluster-1"),
    ("reviews-v3", "reviews", "v3", "cluster-2"),
    ("ratings-2", "ratings", "v1", "cluster-2"),
];

/// A service's Kubernetes name and port in its own cluster, e.g.
/// `http://ratings.bookinfo.svc.cluster.local:9080`.
pub fn service_url(service: &str) -> String {
    format!("http://{service}.{NAMESPACE}.svc.cluster.local:{PORT}")
}

/// The route table Gloo's policy guides create before their examples ("Before you begin"): routes
/// to ratings, labelled `route: ratings`, for every client workload in the mesh. Policies that
/// select `route: ratings` apply to these routes. Shape from
/// https://docs.solo.io/gloo-mesh-enterprise/latest/resilience/ (the guides' ratings route table).
pub const RATINGS_ROUTE_TABLE: &str = "\
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: ratings-rt
  namespace: bookinfo
spec:
  hosts:
  - ratings.bookinfo.svc.cluster.local
  workloadSelectors:
  - {}
  http:
  - name: ratings
    labels:
      route: ratings
    forwardTo:
      destinations:
      - ref:
          name: ratings
          namespace: bookinfo
          cluster: cluster-1
        port:
          number: 9080
";

pub struct Bookinfo {
    pub mesh: LocalMesh,
    gateways: Vec<tokio::process::Child>,
    /// This binary's one-mesh-at-a-time turn, held until the mesh is gone.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// One answer: status, response headers, and the JSON the app wrote (`Null` when the answer
/// came from Envoy, e.g. a 403, 429 or 503).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub json: Value,
}

impl Answer {
    /// A string field of the app's answer: `service`, `version`, `cluster`, `path`, `method`.
    pub fn field(&self, name: &str) -> &str {
        self.json[name].as_str().unwrap_or_default()
    }

    /// A request header as it reached the app.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.json["headers"][name.to_ascii_lowercase()].as_str()
    }

    /// A response header as it reached the client.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request: method, URL, headers and body.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str) -> Self {
        Request {
            method: "GET",
            url,
            ..Default::default()
        }
    }

    pub fn with_headers(self, headers: &'a [(&'a str, &'a str)]) -> Self {
        Request { headers, ..self }
    }
}

impl Bookinfo {
    /// The demo mesh with bookinfo's workloads added; returns once productpage reaches every
    /// service of its own cluster by its Kubernetes name and every sidecar is serving.
    pub async fn start(name: &str) -> Bookinfo {
        Bookinfo::start_with(name, MeshOptions::free()).await
    }

    /// Applies an example as its guide wrote it; panics with the server's answer if refused.
    /// Returns the answer's JSON (warnings included).
    pub async fn apply_example(&self, file: &str) -> Value {
        self.apply(file, &crate::example(file)).await
    }

    /// Applies YAML (the guide's prerequisites, or a test's own); panics if refused.
    pub async fn apply(&self, source: &str, yaml: &str) -> Value {
        let response = self.mesh.apply(source, yaml).await.expect("the API answers");
        assert_eq!(response.status, 200, "{source} refused: {}", response.body);
        serde_json::from_str(&response.body).unwrap_or(Value::Null)
    }

    /// Deletes the resources a YAML text names (an example, when the next one replaces it).
    pub async fn delete(&self, source: &str, yaml: &str) {
        let response = self
            .mesh
            .api()
            .expect("admin client config")
            .request(
                "POST",
                &format!("/api/v1/delete?source={source}"),
                Some(("application/yaml", yaml.as_bytes().to_vec())),
            )
            .await
            .expect("the API answers");
        assert_eq!(response.status, 200, "deleting {source}: {}", response.body);
    }

    /// Deletes what an example applied.
    pub async fn delete_example(&self, file: &str) {
        self.delete(file, &crate::example(file)).await
    }

    /// The status the management server gives a resource (`Kind`, namespace, name).
    pub async fn status(&self, kind: &str, namespace: &str, name: &str) -> Value {
        let response = self
            .mesh
            .api()
            .expect("admin client config")
            .request("GET", &format!("/api/v1/describe/{kind}/{namespace}/{name}"), None)
            .await
            .expect("the API answers");
        assert_eq!(
            response.status, 200,
            "describe {kind}/{namespace}/{name}: {}",
            response.body
        );
        serde_json::from_str(&response.body).expect("describe answers JSON")
    }

    /// One request through `app`'s sidecar, as that app would send it. A request that gets no
    /// answer at all (connection refused or reset, timeout) is status 0, the error in `body`.
    pub async fn call(&self, app: &str, request: Request<'_>) -> Answer {
        let proxy = format!("127.0.0.1:{}", self.mesh.app(app).outbound_port);
        send(Some(&proxy), request, Duration::from_secs(10)).await
    }

    /// Calls `url` `n` times from `app`; counts the answers by `field` (`version`, `cluster`,
    /// `service`), non-200 answers under `HTTP <status>`.
    pub async fn tally(&self, app: &str, url: &str, n: usize, field: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let answer = self.call(app, Request::get(url)).await;
            let key = if answer.status == 200 {
                answer.field(field).to_string()
            } else {
                format!("HTTP {}", answer.status)
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    /// Sets a workload's chaos on its own port, not through the mesh: `fail-every/N` (every Nth
    /// request answers 503) or `delay-ms/N` (every answer N ms late); 0 turns it off.
    pub async fn chaos(&self, app: &str, setting: &str) {
        let url = format!("http://127.0.0.1:{}/__demo/{setting}", self.mesh.app(app).app_port);
        let response = httpc::request("PUT", &url, None, &[], None, Duration::from_secs(5))
            .await
            .expect("the app's chaos control answers");
        assert_eq!(response.status, 200, "PUT {url}: {}", response.body);
    }

    /// Starts Gloo's ingress gateway in `cluster`: `istio-ingressgateway` in `gloo-mesh-gateways`,
    /// labelled `istio: ingressgateway` and `app: istio-ingressgateway`. Each VirtualGateway port
    /// in `ports` is served on a free local port (as a Kubernetes Service maps its port to the
    /// pod's); returns VirtualGateway port -> local port. It stops with the mesh.
    pub fn start_ingress(&mut self, cluster: &str, ports: &[u16]) -> BTreeMap<u16, u16> {
        let map: BTreeMap<u16, u16> = ports
            .iter()
            .map(|p| (*p, trellis_support::process::free_port()))
            .collect();
        let port_map = map
            .iter()
            .map(|(p, l)| format!("{p}={l}"))
            .collect::<Vec<_>>()
            .join(",");
        let admin = trellis_support::process::free_port();
        let gateway = trellis_testkit::spawn_ingress_gateway(
            &self.mesh,
            cluster,
            admin,
            &[
                "--name",
                &format!("istio-ingressgateway-{cluster}"),
                "--labels",
                "istio=ingressgateway,app=istio-ingressgateway",
                "--namespace",
                "gloo-mesh-gateways",
                "--service-account",
                "istio-ingressgateway",
                "--port-map",
                &port_map,
            ],
        );
        self.gateways.push(gateway);
        map
    }

    /// One request straight to a local port (an ingress gateway's), `host` as the Host header.
    pub async fn ingress(&self, port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut all = vec![("host", host)];
        all.extend_from_slice(headers);
        send(None, Request::get(&url).with_headers(&all), Duration::from_secs(10)).await
    }

    /// Polls `check` until it holds; fails after `limit` naming `what` and the logs.
    pub async fn until<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; logs in {}",
                self.mesh.dir.join("logs").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts one more demo app with a sidecar (a service the fixture lacks, or a new instance).
    pub fn start_workload(
        &mut self,
        name: &str,
        namespace: &str,
        service: &str,
        version: &str,
        cluster: &str,
        port: u16,
    ) {
        let spec = AppSpec::new(name, namespace, service, version, cluster).on_port(port);
        self.mesh
            .start_app(&trellis_testkit::bin(), spec)
            .unwrap_or_else(|e| panic!("{name} starts: {e:#}"));
    }

    /// Stops every process and removes the mesh's directory.
    pub async fn finish(mut self) {
        self.gateways.clear();
        trellis_testkit::finish(self.mesh).await;
    }
}

/// Polls `attempt` until it gives a value; fails after `limit`, naming `what` and the last miss.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: not within {limit:?}; last: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(proxy: Option<&str>, request: Request<'_>, timeout: Duration) -> Answer {
    let body = request.body.map(|b| ("application/octet-stream", b.to_vec()));
    match httpc::request(request.method, request.url, proxy, request.headers, body, timeout).await {
        Ok(response) => Answer {
            status: response.status,
            json: serde_json::from_str(&response.body).unwrap_or(Value::Null),
            headers: response.headers,
            body: response.body,
        },
        Err(error) => Answer {
            status: 0,
            headers: Vec::new(),
            body: format!("{error:#}"),
            json: Value::Null,
        },
    }
}

/// Where Gloo 2.x's add-ons chart installs ext-auth and the rate limiter (`addonNamespace:
/// gloo-mesh-addons`), and so where its guides' ExtAuthServer and rate-limit resources point.
pub const ADDONS_NAMESPACE: &str = "gloo-mesh-addons";

/// One bookinfo mesh at a time per test binary: two started together on two cores starve each
/// other past their start-up deadlines, and their Envoys exhaust the host's inotify instances.
static ONE_MESH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Bookinfo {
    /// [`Bookinfo::start`] with Gloo's add-ons in every cluster, registered as its chart names
    /// them: `ext-auth-service`, and `rate-limiter` (with a Redis, when `redis-server` is
    /// installed), both in `gloo-mesh-addons`. They stop with the mesh.
    pub async fn start_with_addons(name: &str) -> Bookinfo {
        let mut bookinfo = Bookinfo::start(name).await;
        let bin = trellis_testkit::bin();
        let dir = bookinfo.mesh.dir.clone();
        for cluster in &mut bookinfo.mesh.clusters {
            let addons =
                trellis_cli::up::start_addons_in(&bin, &dir, &cluster.name, cluster.registry_port, ADDONS_NAMESPACE)
                    .await
                    .expect("the add-ons start");
            cluster.addons.extend(addons);
        }
        bookinfo
    }

    /// [`Bookinfo::start`] whose agents also admit sidecars of `namespaces` (guides whose
    /// examples live in `global`, `qa`, `web`...): the same workloads, the same readiness.
    pub async fn start_allowing(name: &str, namespaces: &[&str]) -> Bookinfo {
        let mut options = MeshOptions::free();
        for namespace in namespaces {
            options
                .agent_flags
                .extend(["--allow-namespace".to_string(), namespace.to_string()]);
        }
        Bookinfo::start_with(name, options).await
    }

    /// [`Bookinfo::start`] with `options` for the mesh (e.g. per-cluster agent flags such as a
    /// `--region`); the bookinfo namespace is admitted whatever `options` say. Waits its turn
    /// behind any other bookinfo mesh of this test binary.
    pub async fn start_with(name: &str, mut options: MeshOptions) -> Bookinfo {
        let turn = ONE_MESH.lock().await;
        options
            .agent_flags
            .extend(["--allow-namespace".to_string(), NAMESPACE.to_string()]);
        let mut mesh = trellis_testkit::demo_mesh_with(name, options).await;
        let bin = trellis_testkit::bin();
        for (name, service, version, cluster) in WORKLOADS {
            let spec = AppSpec::new(name, NAMESPACE, service, version, cluster).on_port(PORT);
            mesh.start_app(&bin, spec).expect("a bookinfo workload starts");
        }
        mesh.wait_for_traffic(Duration::from_secs(60))
            .await
            .expect("every sidecar serves");
        let bookinfo = Bookinfo {
            mesh,
            gateways: Vec::new(),
            _turn: turn,
        };
        for service in ["details", "reviews", "ratings"] {
            let url = format!("{}/", service_url(service));
            bookinfo
                .until(
                    &format!("productpage reaches {url}"),
                    Duration::from_secs(60),
                    || async { bookinfo.call("productpage", Request::get(&url)).await.status == 200 },
                )
                .await;
        }
        bookinfo
    }
}
