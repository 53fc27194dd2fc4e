//! The store contract on a real kube-apiserver (the management cluster's API server as the
//! store): replicas share config, discovery and records through the commit log; conditional
//! writes are decided once when replicas race; a write larger than a Secret goes in parts; the
//! leader's snapshot lets a new replica start without the compacted commits; the write lock
//! excludes another replica; a caller without credentials is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_api::Resource;
use trellis_kube::store::{KubeStore, KubeStoreConfig};
use trellis_model::{ClusterDiscovery, Workload};
use trellis_store::{
    AccessStore, ApplyAction, AuditRecord, AuditRetention, IntermediateClaim, IntermediateRecord, IssuanceStore,
    SilenceRecord, SilenceStore, Store, TokenCheck, TokenRecord,
};
use trellis_testkit::etcd::Etcd;
use trellis_testkit::kube::KubeApiServer;

const NAMESPACE: &str = "trellis";

fn vd(name: &str, host: &str) -> Resource {
    let text = format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{host}], ports: [{{number: 80}}]}}\n"
    );
    trellis_api::parse_one("test", &text).unwrap()
}

fn workload(index: usize) -> Workload {
    Workload {
        name: format!("workload-with-a-long-enough-name-{index:05}"),
        namespace: "demo".into(),
        service: format!("service-{}", index / 3),
        address: format!("10.{}.{}.{}", index / 65536, (index / 256) % 256, index % 256),
        ..Default::default()
    }
}

fn audit(action: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time: 100,
        user: "admin".into(),
        groups: vec![],
        authenticated_by: "admin-token".into(),
        action: action.into(),
        target: "cluster/c1".into(),
        result: "ok".into(),
        message: String::new(),
        diff: vec![],
    }
}

/// Runs blocking store calls off the test's runtime, as the management server's threads do.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

struct Cluster {
    _etcd: Etcd,
    kube: KubeApiServer,
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

async fn cluster(name: &str) -> Cluster {
    let dir = std::env::temp_dir().join(format!("trellis-kube-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let etcd = Etcd::start(&dir.join("etcd")).await;
    let kube = KubeApiServer::start(&dir.join("kube"), &etcd).await;
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    assert_eq!(kube.create(&namespace, false).await.status, 201);
    let kubeconfig = dir.join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    Cluster {
        _etcd: etcd,
        kube,
        dir,
        kubeconfig,
    }
}

impl Cluster {
    fn config(&self, replica: &str) -> KubeStoreConfig {
        let mut config = KubeStoreConfig::new(
            Some(self.kubeconfig.clone()),
            NAMESPACE,
            replica,
            self.dir.join(format!("{replica}.redb")),
        );
        // Small enough that the test compacts whole batches.
        config.snapshot_every = 20;
        config.keep = 10;
        config.batch = 10;
        config
    }

    async fn open(&self, replica: &str) -> Arc<KubeStore> {
        let config = self.config(replica);
        blocking(move || Arc::new(KubeStore::open(config).unwrap())).await
    }

    async fn commit_exists(&self, seq: u64) -> bool {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/trellis-store-{seq:012}");
        self.kube.client().get(&path).await.unwrap().status == 200
    }
}

/// Waits until `b` replayed everything `a` did.
fn settle(a: &KubeStore, b: &KubeStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.applied().unwrap() < a.applied().unwrap() {
        assert!(
            Instant::now() < deadline,
            "replica b did not follow the log within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_store_through_the_api_server() {
    let cluster = cluster("contract").await;
    let (a, b) = (cluster.open("a").await, cluster.open("b").await);
    let (a2, b2) = (a.clone(), b.clone());
    blocking(move || {
        let (a, b) = (a2, b2);
        // Config written on one replica is on the other, with the same server-set metadata.
        let first = a.apply(vec![vd("a", "a.mesh"), vd("b", "b.mesh")]).unwrap();
        assert!(
            first
                .iter()
                .all(|o| o.action == ApplyAction::Created && o.generation == 1)
        );
        settle(&a, &b);
        let changed = b.apply(vec![vd("a", "a2.mesh")]).unwrap();
        assert_eq!((changed[0].action, changed[0].generation), (ApplyAction::Configured, 2));
        settle(&b, &a);
        assert_eq!(a.list().unwrap(), b.list().unwrap());
        assert_eq!(a.revision(), b.revision());
        // An unchanged apply answers without a commit.
        let before = a.applied().unwrap();
        assert_eq!(
            a.apply(vec![vd("a", "a2.mesh")]).unwrap()[0].action,
            ApplyAction::Unchanged
        );
        assert_eq!(a.applied().unwrap(), before);
        let deleted = b.delete(&[vd("b", "x").key(), vd("zz", "x").key()]).unwrap();
        assert_eq!(deleted.iter().map(|(_, e)| *e).collect::<Vec<_>>(), [true, false]);
        settle(&b, &a);
        assert!(a.get(&vd("b", "x").key()).unwrap().is_none());

        // A discovery larger than one Secret holds travels in parts.
        let mut big = ClusterDiscovery {
            cluster: "big".into(),
            workloads: (0..12_000).map(workload).collect(),
            ..Default::default()
        };
        big.normalize();
        assert!(serde_json::to_vec(&big).unwrap().len() > 1024 * 1024);
        a.put_discovery(&big).unwrap();
        settle(&a, &b);
        assert_eq!(b.discoveries().unwrap(), vec![big.clone()]);

        // Audit numbers are shared.
        let keep = AuditRetention {
            max_records: 100,
            max_age_secs: 1000,
        };
        let s1 = a.append_audit(audit("one"), keep, 100).unwrap();
        let s2 = b.append_audit(audit("two"), keep, 100).unwrap();
        assert!(s2 > s1);
        settle(&b, &a);
        assert_eq!(a.audit_records().unwrap(), b.audit_records().unwrap());
    })
    .await;

    // A token presented on both replicas at once works exactly once (5 rounds); presenting an
    // unknown token writes nothing.
    for round in 0..5 {
        let hash = format!("token-{round}");
        let record = TokenRecord {
            cluster: "c1".into(),
            expires_at: u64::MAX,
            used: false,
        };
        let (a1, b1, h1) = (a.clone(), b.clone(), hash.clone());
        blocking(move || {
            a1.put_token(&h1, &record).unwrap();
            settle(&a1, &b1);
        })
        .await;
        let (a1, b1, h1, h2) = (a.clone(), b.clone(), hash.clone(), hash.clone());
        let (x, y) = tokio::join!(
            blocking(move || a1.consume_token(&h1, 10).unwrap()),
            blocking(move || b1.consume_token(&h2, 10).unwrap())
        );
        let accepted = [&x, &y]
            .iter()
            .filter(|c| matches!(c, TokenCheck::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "round {round}: {x:?} {y:?}");
    }
    let (a1, b1) = (a.clone(), b.clone());
    blocking(move || {
        settle(&b1, &a1);
        let before = a1.applied().unwrap();
        assert_eq!(a1.consume_token("guessed", 10).unwrap(), TokenCheck::Unknown);
        assert_eq!(
            a1.consume_token("token-0", 10).unwrap(),
            TokenCheck::AlreadyUsed { cluster: "c1".into() }
        );
        assert_eq!(
            a1.applied().unwrap(),
            before,
            "a refused token is answered without a commit"
        );
    })
    .await;

    // Two replicas claim an intermediate for one cluster at once: one gets it.
    let claim = |key: &str| IntermediateRecord {
        cluster: "c9".into(),
        serial: format!("serial-{key}"),
        issued_at: 1000,
        not_after: 100_000,
        renewable_at: 50_000,
        revoked: false,
        public_key_sha256: key.into(),
        root_sha256: String::new(),
    };
    let (a1, b1, ca, cb) = (a.clone(), b.clone(), claim("ka"), claim("kb"));
    let (x, y) = tokio::join!(
        blocking(move || a1.claim_intermediate(&ca, 1000).unwrap()),
        blocking(move || b1.claim_intermediate(&cb, 1000).unwrap())
    );
    let recorded = [&x, &y]
        .iter()
        .filter(|c| matches!(c, IntermediateClaim::Recorded))
        .count();
    assert_eq!(recorded, 1, "{x:?} {y:?}");

    // The write lock: while a holds it, b waits.
    let (a1, b1) = (a.clone(), b.clone());
    let waited = blocking(move || {
        let held = a1.lock_writes().unwrap();
        assert!(held.is_shared());
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let _lock = b1.lock_writes().unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(800));
        drop(held);
        waiter.join().unwrap()
    })
    .await;
    assert!(
        waited >= Duration::from_millis(700),
        "b took the lock a held after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "b waited {waited:?} for a released lock"
    );

    // A replica that stopped replaying early (it follows no watch: it catches up only when it
    // writes).
    let mut stalled_config = cluster.config("stalled");
    stalled_config.follow = false;
    let stalled = blocking(move || Arc::new(KubeStore::open(stalled_config).unwrap())).await;

    // Enough commits for a snapshot; the leader compacts; old commits are gone.
    let a1 = a.clone();
    let (seq, compacted) = blocking(move || {
        for i in 0..25 {
            a1.put_silence(&SilenceRecord {
                code: format!("CODE{i}"),
                target: None,
                created_by: "admin".into(),
                created_at: 5,
            })
            .unwrap();
        }
        let compacted = a1.compact_if_due().unwrap();
        (a1.applied().unwrap(), compacted)
    })
    .await;
    assert!(compacted, "{seq} commits, none snapshotted");
    assert!(!cluster.commit_exists(1).await, "commit 1 was compacted away");
    assert!(cluster.commit_exists(seq).await, "the last commit stays");

    // The stalled replica finds the commits it lacks compacted away: it refuses to write (its
    // write would take a deleted commit's place, a fork) and says it must restart.
    let refused = blocking(move || {
        let refused = stalled.put_silence(&SilenceRecord {
            code: "FORK".into(),
            target: None,
            created_by: "admin".into(),
            created_at: 7,
        });
        (refused.map_err(|e| e.to_string()), stalled.fell_behind())
    })
    .await;
    assert!(
        matches!(&refused.0, Err(message) if message.contains("fell behind")),
        "{refused:?}"
    );
    assert!(refused.1);

    // A replica started now loads the snapshot and replays the rest: the same store.
    let c = cluster.open("c").await;
    let (a1, c1) = (a.clone(), c.clone());
    blocking(move || {
        a1.put_silence(&SilenceRecord {
            code: "AFTER".into(),
            target: None,
            created_by: "admin".into(),
            created_at: 6,
        })
        .unwrap();
        settle(&a1, &c1);
        assert_eq!(a1.list().unwrap(), c1.list().unwrap());
        assert_eq!(a1.revision(), c1.revision());
        assert_eq!(a1.discoveries().unwrap(), c1.discoveries().unwrap());
        assert_eq!(a1.silences().unwrap(), c1.silences().unwrap());
        assert_eq!(a1.silences().unwrap().len(), 26);
        assert_eq!(a1.audit_records().unwrap(), c1.audit_records().unwrap());
        assert_eq!(
            c1.consume_token("token-3", 10).unwrap(),
            TokenCheck::AlreadyUsed { cluster: "c1".into() }
        );
    })
    .await;

    // The local copy holds Secrets: this user only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cluster.dir.join("c.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "local copy mode {mode:o}");

    // Without a valid credential the API server refuses the store, and the error says so.
    let bad = cluster.dir.join("bad-kubeconfig");
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    std::fs::write(&bad, text.replace(&cluster.kube.token, "not-a-token")).unwrap();
    let mut config = cluster.config("intruder");
    config.kubeconfig = Some(bad);
    let refused = blocking(move || KubeStore::open(config).err().expect("refused").to_string()).await;
    assert!(refused.contains("401") || refused.contains("Unauthorized"), "{refused}");
    let _ = std::fs::remove_dir_all(&cluster.dir);
}
