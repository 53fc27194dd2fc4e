//! Three management server replicas on one real etcd (TLS, client certificates): one leads, all
//! serve the relay and the API. The leader is killed (SIGKILL) under a stream of applies to every
//! replica and of requests through the demo mesh: another replica leads within 5 s, the agents
//! carry on with a surviving replica, every apply that was answered 200 is in the store, and no
//! request fails. Once with the leader elected by an etcd lease, once by a Kubernetes Lease on a
//! real kube-apiserver.

use trellis_testkit as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use trellis_cli::api_client::ApiClient;
use trellis_cli::up::{MeshOptions, Proc};
use trellis_support::process::free_port;
use trellis_testkit::etcd::Etcd;

const PREFIX: &str = "/replicas/";

struct Replica {
    name: String,
    proc: Proc,
    admin_port: u16,
    relay: u16,
    api: ApiClient,
}

/// Where the replicas keep their store and how they elect their leader.
struct Backend {
    /// The store's and the election's flags, the same for every replica.
    flags: Vec<String>,
}

/// Starts replica `name` with the first replica's PKI and admin token (as each pod of a
/// Deployment mounts the same Secrets), on the relay port the agents already know.
async fn start_replica(
    backend: &Backend,
    dir: &std::path::Path,
    first: &std::path::Path,
    name: &str,
    relay: u16,
) -> Replica {
    let data = dir.join(name);
    std::fs::create_dir_all(data.join("api")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    copy_dir(&first.join("pki"), &data.join("pki"));
    std::fs::copy(
        first.join("api").join("admin-token"),
        data.join("api").join("admin-token"),
    )
    .unwrap();
    let (api_port, admin_port) = (free_port(), free_port());
    let mut args: Vec<String> = vec![
        "mgmt".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--api-addr".into(),
        format!("127.0.0.1:{api_port}"),
        "--relay-addr".into(),
        format!("127.0.0.1:{relay}"),
        "--admin-addr".into(),
        format!("127.0.0.1:{admin_port}"),
        "--replica-name".into(),
        name.into(),
    ];
    args.extend(backend.flags.iter().cloned());
    let mut proc = Proc::new(&bin(), dir, &format!("mgmt-{name}"), args);
    proc.start().unwrap();
    let config = data.join("admin.conf");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(api) = ApiClient::from_config_file(&config)
            && let Ok(response) = api.get("/api/v1/resources").await
            && response.status == 200
        {
            return Replica {
                name: name.into(),
                proc,
                admin_port,
                relay,
                api,
            };
        }
        assert!(
            Instant::now() < deadline,
            "replica {name} did not start: see {}",
            proc.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            // std::fs::copy keeps the mode: private keys stay 0600.
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

async fn leads(admin_port: u16) -> Option<bool> {
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let body = trellis_support::httpc::get(&url, Duration::from_secs(2))
        .await
        .ok()?
        .body;
    body.lines()
        .find_map(|line| line.strip_prefix("trellis_mgmt_leader "))
        .map(|value| value.trim() == "1")
}

/// A counter of the replica's metrics (`trellis_mgmt_<name>_total`).
async fn counter(admin_port: u16, name: &str) -> u64 {
    let series = format!("trellis_mgmt_{name}_total");
    scrape_present(admin_port, &series)
        .await
        .unwrap_or_else(|| panic!("no {series} on the replica at {admin_port}"))
}

/// Certificates of `kind` a replica signed (`trellis_mgmt_certificates_issued_total`).
async fn issued(admin_port: u16, kind: &str) -> u64 {
    let series = format!("trellis_mgmt_certificates_issued_total{{result=\"{kind}\"}}");
    scrape(admin_port, &series).await
}

/// Each cluster's current config version as a replica serves it.
async fn served_versions(api: &ApiClient) -> Vec<String> {
    let clusters = api.get_json("/api/v1/clusters").await.unwrap();
    ["cluster-1", "cluster-2"]
        .iter()
        .map(|name| clusters["clusters"][name]["currentVersion"].to_string())
        .collect()
}

fn virtual_destination(n: usize) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: stream-{n}, namespace: demo}}\nspec:\n  hosts: [stream-{n}.mesh.internal]\n  services: [{{name: backend, namespace: demo}}]\n  ports: [{{number: 80, protocol: HTTP}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_under_applies_and_traffic_and_nothing_is_lost() {
    // Beside the mesh's directory: the mesh starts in an empty one.
    let etcd = Etcd::start(&test_dir("replicas-etcd")).await;
    let backend = Backend {
        flags: etcd.mgmt_args(PREFIX),
    };
    kill_the_leader(&backend, "replicas").await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_elected_by_a_kubernetes_lease_dies_and_another_takes_the_lease() {
    on_kubernetes("replicas-kubernetes", "replicas-lease", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_kubernetes_store_lose_their_leader_and_nothing_is_lost() {
    on_kubernetes("replicas-kubernetes-store", "replicas-kstore", true).await;
}

/// Three replicas elected by a Kubernetes Lease on a real kube-apiserver, their store on etcd
/// or (`api_server_store`) on the API server itself.
async fn on_kubernetes(peers_dir: &str, mesh_name: &str, api_server_store: bool) {
    let peers = test_dir(peers_dir);
    let _ = std::fs::remove_dir_all(&peers);
    let etcd = Etcd::start(&peers.join("etcd")).await;
    let kube = trellis_testkit::kube::KubeApiServer::start(&peers.join("kube"), &etcd).await;
    kube.install_crds().await;
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trellis"}});
    assert_eq!(kube.create(&namespace, false).await.status, 201);
    let kubeconfig = peers.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let mut flags: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--leader-election".into(),
        "kubernetes".into(),
    ];
    if api_server_store {
        flags.extend(["--store".into(), "kubernetes".into()]);
    } else {
        flags.extend(etcd.mgmt_args(PREFIX));
    }
    let backend = Backend { flags };
    let survivors = kill_the_leader(&backend, mesh_name).await;
    if api_server_store {
        // The config lives in the API server: commits are Secrets of the Lease's namespace.
        let secrets = kube
            .client()
            .get_json("/api/v1/namespaces/trellis/secrets?labelSelector=trellis.io%2Fstore%3Dcommit")
            .await
            .unwrap();
        let commits = secrets["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!(commits >= 20, "{commits} commits in the API server");
    }
    // The Lease names the replica that leads now (read before it stops and resigns).
    let lease = kube
        .client()
        .get_json("/apis/coordination.k8s.io/v1/namespaces/trellis/leases/trellis-mgmt-leader")
        .await
        .unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string();
    assert!(
        holder == "r2" || holder == "r3",
        "the Lease holder after r1 died: {lease}"
    );
    assert!(lease["spec"]["leaseTransitions"].as_i64() >= Some(1), "{lease}");
    survivors.stop().await;
}

/// The replicas left after the leader's death, and the mesh.
struct Survivors {
    replicas: [Replica; 2],
    mesh: trellis_cli::up::LocalMesh,
}

impl Survivors {
    async fn stop(self) {
        let Survivors { replicas, mut mesh } = self;
        for mut replica in replicas {
            replica.proc.stop().await;
        }
        mesh.shutdown().await;
    }
}

async fn kill_the_leader(backend: &Backend, name: &str) -> Survivors {
    let (relay2, relay3) = (free_port(), free_port());
    let mut options = MeshOptions::free();
    options.mgmt_flags = backend.flags.clone();
    options.mgmt_flags.extend(["--replica-name".into(), "r1".into()]);
    options.extra_relays = vec![format!("127.0.0.1:{relay2}"), format!("127.0.0.1:{relay3}")];
    let mut mesh = demo_mesh_with(name, options).await;
    let replicas_dir = mesh.dir.join("replicas");
    let first = mesh.dir.join("mgmt");
    let r2 = start_replica(backend, &replicas_dir, &first, "r2", relay2).await;
    let r3 = start_replica(backend, &replicas_dir, &first, "r3", relay3).await;
    let r1 = ApiClient::from_config_file(&mesh.api_config).unwrap();

    // r1 started first and leads; the others follow and serve what r1 stored.
    assert_eq!(leads(mesh.admin_port).await, Some(true), "r1 leads");
    assert_eq!(leads(r2.admin_port).await, Some(false));
    assert_eq!(leads(r3.admin_port).await, Some(false));
    let listed = r3.api.get_json("/api/v1/resources").await.unwrap();
    assert!(
        listed.to_string().contains("backend-v2"),
        "r3 reads the demo config r1 stored: {listed}"
    );

    // Requests through the frontend's sidecar for as long as the test runs.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, proxy) = (
            stop.clone(),
            format!("127.0.0.1:{}", mesh.app("frontend").outbound_port),
        );
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let answer = trellis_support::httpc::request(
                    "GET",
                    "http://backend.mesh.internal/",
                    Some(&proxy),
                    &[],
                    None,
                    Duration::from_secs(5),
                )
                .await;
                match answer {
                    Ok(response) if response.status == 200 => ok += 1,
                    Ok(response) => failed.push(format!("HTTP {}", response.status)),
                    Err(error) => failed.push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    // Applies to every replica in turn; an apply to a dead replica is not acknowledged and is
    // sent to the next.
    let applies = {
        let stop = stop.clone();
        let apis = [("r1", r1.clone()), ("r2", r2.api.clone()), ("r3", r3.api.clone())];
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (name, api) = &apis[n % apis.len()];
                let body = virtual_destination(n).into_bytes();
                let answer = api
                    .request(
                        "POST",
                        "/api/v1/apply?source=stream.yaml",
                        Some(("application/yaml", body)),
                    )
                    .await;
                if let Ok(response) = answer {
                    assert_eq!(response.status, 200, "apply {n} to {name}: {}", response.body);
                    acknowledged.push(n);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acknowledged
        })
    };
    let translated_before = [
        counter(mesh.admin_port, "translations").await,
        counter(r2.admin_port, "translations").await,
        counter(r3.admin_port, "translations").await,
    ];
    // r2 and r3 started with r1's translation: they never translated.
    assert_eq!(translated_before[1..], [0, 0], "a follower translated when it started");

    let followed_before = counter(r3.admin_port, "translations_followed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // One replica translates: r1 translated the applies, r2 and r3 translated nothing and
    // served r1's translations, with r1's versions.
    assert!(counter(mesh.admin_port, "translations").await > translated_before[0]);
    assert_eq!(
        counter(r2.admin_port, "translations").await,
        translated_before[1],
        "r2 translated"
    );
    assert_eq!(
        counter(r3.admin_port, "translations").await,
        translated_before[2],
        "r3 translated"
    );
    assert!(counter(r3.admin_port, "translations_followed").await > followed_before);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (leader, follower) = (served_versions(&r1).await, served_versions(&r3.api).await);
        if leader == follower {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r3 serves {follower:?} where r1 serves {leader:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill the leader.
    mesh.mgmt.kill().await;
    let killed = Instant::now();
    let new_leader = loop {
        let (two, three) = (leads(r2.admin_port).await, leads(r3.admin_port).await);
        assert!(two != Some(true) || three != Some(true), "two leaders at once");
        if two == Some(true) {
            break &r2;
        }
        if three == Some(true) {
            break &r3;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no new leader 5 s after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = killed.elapsed();
    println!("{} leads {took:?} after r1 was killed", new_leader.name);
    let survivors_translated = [
        counter(r2.admin_port, "translations").await,
        counter(r3.admin_port, "translations").await,
    ];

    // Both agents go on with r2, the next replica in their list, and hold its current config.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clusters = r2.api.get_json("/api/v1/clusters").await.unwrap();
        let settled = ["cluster-1", "cluster-2"].iter().all(|name| {
            let status = &clusters["clusters"][name];
            status["connected"] == true && status["ackedVersion"] == status["currentVersion"]
        });
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents not settled on r2 30 s after r1 died: {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // r3 holds neither agent's stream but shows both connected, on r2; a proxy's live config
    // is asked of r2, as r3 says.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let clusters = r3.api.get_json("/api/v1/clusters").await.unwrap();
        let on_r2 = ["cluster-1", "cluster-2"].iter().all(|name| {
            let status = &clusters["clusters"][name];
            status["connected"] == true && status["replica"] == "r2"
        });
        if on_r2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r3 does not show the agents connected to r2: {clusters}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let asked = r3
        .api
        .get("/api/v1/clusters/cluster-1/proxies/sidecar~frontend.demo/config")
        .await
        .unwrap();
    assert_eq!(asked.status, 503, "{}", asked.body);
    assert!(
        asked.body.contains("connected to management server replica r2"),
        "{}",
        asked.body
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    // The new leader translates from now on; the other still only serves.
    let (leader_port, leader_before, follower_port, follower_before) = match new_leader.name.as_str() {
        "r2" => (
            r2.admin_port,
            translated_before[1],
            r3.admin_port,
            survivors_translated[1],
        ),
        _ => (
            r3.admin_port,
            translated_before[2],
            r2.admin_port,
            survivors_translated[0],
        ),
    };
    assert!(
        counter(leader_port, "translations").await > leader_before,
        "the new leader translates"
    );
    assert_eq!(
        counter(follower_port, "translations").await,
        follower_before,
        "a follower translated"
    );

    let acknowledged = applies.await.unwrap();
    let (ok, failed) = traffic.await.unwrap();

    // Every acknowledged apply is in the store, whichever replica took it.
    let listed = r3.api.get_json("/api/v1/resources").await.unwrap().to_string();
    let missing: Vec<usize> = acknowledged
        .iter()
        .copied()
        .filter(|n| !listed.contains(&format!("\"stream-{n}\"")))
        .collect();
    assert!(
        acknowledged.len() >= 20,
        "only {} applies were acknowledged",
        acknowledged.len()
    );
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
    assert!(ok >= 100, "only {ok} requests were sent");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );

    // A change applied to a surviving replica reaches the data plane: all traffic to v2.
    let response = r3
        .api
        .request(
            "POST",
            "/api/v1/apply?source=route-table.yaml",
            Some(("application/yaml", route_table(0, 100).into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (v1, v2) = versions(&mesh, 10).await;
        if v1 == 0 && v2 == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new split never reached the frontend ({v1}/{v2})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "{} applies acknowledged, {ok} requests without a failure; new leader after {took:?}",
        acknowledged.len()
    );

    // Only the leader signs: a new cluster's agent that asks the other replica first is sent
    // on to the leader, which registers it and signs its intermediate CA.
    let (leader, follower) = if new_leader.name == "r2" {
        (&r2, &r3)
    } else {
        (&r3, &r2)
    };
    let answer = follower
        .api
        .request(
            "POST",
            "/api/v1/clusters/cluster-3/register",
            Some(("application/json", Vec::new())),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let registration: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let root = mesh.dir.join("relay-root-ca-cluster-3.pem");
    std::fs::write(&root, registration["rootCaPem"].as_str().unwrap()).unwrap();
    let follower_signed = [
        issued(follower.admin_port, "registration").await,
        issued(follower.admin_port, "intermediate").await,
    ];
    let leader_signed = issued(leader.admin_port, "intermediate").await;
    let mut agent = Proc::new(
        &bin(),
        &mesh.dir,
        "agent-cluster-3",
        vec![
            "agent".into(),
            "--cluster".into(),
            "cluster-3".into(),
            "--mgmt".into(),
            format!("127.0.0.1:{},127.0.0.1:{}", follower.relay, leader.relay),
            "--data-dir".into(),
            mesh.dir.join("agent-cluster-3").display().to_string(),
            "--registry-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--xds-addr".into(),
            format!("127.0.0.1:{}", free_port()),
            "--root-ca".into(),
            root.display().to_string(),
        ],
    );
    agent.env.push((
        "TRELLIS_TOKEN".into(),
        registration["token"].as_str().unwrap().to_string(),
    ));
    agent.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while issued(leader.admin_port, "intermediate").await == leader_signed {
        assert!(
            Instant::now() < deadline,
            "the leader never signed cluster-3's intermediate; agent log: {}",
            std::fs::read_to_string(agent.log_path()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        counter(follower.admin_port, "signing_sent_to_leader").await >= 2,
        "registration and intermediate sent on"
    );
    assert_eq!(
        [
            issued(follower.admin_port, "registration").await,
            issued(follower.admin_port, "intermediate").await
        ],
        follower_signed,
        "the follower signed"
    );
    agent.stop().await;
    Survivors {
        replicas: [r2, r3],
        mesh,
    }
}
