//! The three stores side by side, on this machine: the embedded redb file, etcd (one member, TLS
//! with client certificates) and the Kubernetes API server (a real kube-apiserver on that etcd).
//! For each: the latency of 200 applies of one changed resource (median, p99), of 20 discovery
//! reports of a 2,000-workload cluster, and how long a new replica takes to open and hold
//! everything (on the API server: from the snapshot after compaction).
//!
//! Run: `scripts/bench-stores` (`cargo bench -p trellis-kube --bench stores`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_kube::store::{KubeStore, KubeStoreConfig};
use trellis_model::{ClusterDiscovery, Workload};
use trellis_store::{RedbStore, Store};
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::KubeApiServer;

const APPLIES: usize = 200;
const REPORTS: usize = 20;
const WORKLOADS: usize = 2_000;

fn virtual_destination(n: usize) -> trellis_api::Resource {
    let text = format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: bench, namespace: demo}}\nspec: {{hosts: [bench-{n}.mesh], ports: [{{number: 80}}]}}\n"
    );
    trellis_api::parse_one("bench", &text).expect("a valid resource")
}

fn discovery(round: usize) -> ClusterDiscovery {
    let mut discovery = ClusterDiscovery {
        cluster: "big".into(),
        workloads: (0..WORKLOADS)
            .map(|i| Workload {
                name: format!("workload-{i:05}-{round}"),
                namespace: "demo".into(),
                service: format!("service-{}", i / 4),
                address: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    discovery.normalize();
    discovery
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Times the writes on `store`, then how long `reopen` takes to hold the same resources.
fn measure(name: &str, store: Arc<dyn Store>, reopen: impl FnOnce() -> Arc<dyn Store>) {
    let mut applies = Vec::new();
    for n in 0..APPLIES {
        let started = Instant::now();
        store.apply(vec![virtual_destination(n)]).expect("apply");
        applies.push(started.elapsed());
    }
    let mut reports = Vec::new();
    for round in 0..REPORTS {
        let report = discovery(round);
        let started = Instant::now();
        store.put_discovery(&report).expect("discovery");
        reports.push(started.elapsed());
    }
    let started = Instant::now();
    let replica = reopen();
    let deadline = Instant::now() + Duration::from_secs(60);
    while replica.list().expect("list") != store.list().expect("list") {
        assert!(Instant::now() < deadline, "{name}: the new replica never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let opened = started.elapsed();
    println!(
        "{name:<22} apply p50 {:>7.2} ms  p99 {:>7.2} ms | discovery ({WORKLOADS} workloads) p50 {:>7.1} ms  p99 {:>7.1} ms | new replica ready {:>7.1} ms",
        percentile(&mut applies, 0.5).as_secs_f64() * 1e3,
        percentile(&mut applies, 0.99).as_secs_f64() * 1e3,
        percentile(&mut reports, 0.5).as_secs_f64() * 1e3,
        percentile(&mut reports, 0.99).as_secs_f64() * 1e3,
        opened.as_secs_f64() * 1e3,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and runs benches too; only `cargo bench` (which passes
        // `--bench`) should spend minutes on figures.
        println!("benchmark skipped: run it with `cargo bench`");
        return;
    }
    let dir = std::env::temp_dir().join(format!("trellis-bench-stores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let etcd = Etcd::start(&dir.join("etcd")).await;
    let kube = KubeApiServer::start(&dir.join("kube"), &etcd).await;
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "trellis"}});
    assert_eq!(kube.create(&namespace, false).await.status, 201);
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let etcd_config = etcd.config("/bench/");
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || {
        let path = dir2.join("bench.redb");
        let redb: Arc<dyn Store> = Arc::new(RedbStore::open(&path).unwrap());
        let held = redb.clone();
        measure("redb (one server)", redb, move || {
            drop(held);
            let copy = path.with_extension("copy.redb");
            std::fs::copy(&path, &copy).unwrap();
            Arc::new(RedbStore::open(&copy).unwrap())
        });

        let etcd_store: Arc<dyn Store> = Arc::new(trellis_etcd::EtcdStore::open(&etcd_config).unwrap());
        measure("etcd", etcd_store, move || {
            Arc::new(trellis_etcd::EtcdStore::open(&etcd_config).unwrap())
        });

        let config = |replica: &str| {
            let mut config = KubeStoreConfig::new(
                Some(kubeconfig.clone()),
                "trellis",
                replica,
                dir2.join(format!("{replica}.redb")),
            );
            // One snapshot after the writes, so that the new replica starts from it.
            config.snapshot_every = (APPLIES + REPORTS) as u64;
            config.keep = 10;
            config.batch = 10;
            config
        };
        let leader = Arc::new(KubeStore::open(config("leader")).unwrap());
        let compacting = leader.clone();
        measure("Kubernetes API server", leader, move || {
            compacting.compact_if_due().expect("a snapshot");
            Arc::new(KubeStore::open(config("replica")).unwrap())
        });
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
