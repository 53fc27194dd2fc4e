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

/// The shared translation, once the follower's watch has it (with nothing held, waiting
/// returns at once while nothing is shared).
fn until_shared(follower: &KubeStore) -> trellis_store::StampedTranslation {
    use trellis_store::TranslationShare;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(stamped) = follower.wait_translation(0, Duration::from_secs(1)).unwrap() {
            return stamped;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never saw the shared translation"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The leader's translation, shared through the API server: a follower waits for it, reads
/// it whole, and fetches only sections by version; sections no manifest names any more go.
#[tokio::test(flavor = "multi_thread")]
async fn the_leaders_translation_is_shared_through_the_api_server() {
    use std::collections::BTreeMap;
    use trellis_store::{SharedCluster, SharedTranslation, TranslationShare};

    let cluster = cluster("share").await;
    let (leader, follower) = (cluster.open("leader").await, cluster.open("follower").await);
    let sections = |big: &[u8]| -> BTreeMap<(String, String), Arc<[u8]>> {
        BTreeMap::from([
            (
                ("c1".to_string(), "listeners".to_string()),
                Arc::from(&b"listeners v1"[..]),
            ),
            (("c1".to_string(), "routes".to_string()), Arc::from(big)),
            (
                ("c2".to_string(), "listeners".to_string()),
                Arc::from(&b"listeners v1"[..]),
            ),
        ])
    };
    let translation = |payloads: &BTreeMap<(String, String), Arc<[u8]>>, revision: u64| {
        let mut clusters: BTreeMap<String, SharedCluster> = BTreeMap::new();
        for ((name, section), payload) in payloads {
            let entry = clusters.entry(name.clone()).or_insert_with(|| SharedCluster {
                version: String::new(),
                sections: Vec::new(),
            });
            entry
                .sections
                .push((section.clone(), trellis_base::stable_hash(payload)));
            entry.version = format!("{}-{revision}", entry.sections.len());
        }
        SharedTranslation {
            revision,
            traceparent: None,
            report: Arc::from(&b"{\"warnings\":{}}"[..]),
            clusters,
        }
    };
    // A section larger than a Secret holds travels in parts.
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let first = sections(&big);
    let shared = translation(&first, 7);
    let (l, f, published) = (leader.clone(), follower.clone(), shared.clone());
    blocking(move || {
        let payload = |cluster: &str, section: &str| first.get(&(cluster.to_string(), section.to_string())).cloned();
        l.publish_translation(&published, &payload).unwrap();
        let stamped = until_shared(&f);
        assert_eq!(stamped.translation, published);
        let versions: Vec<u64> = published.clusters["c1"].sections.iter().map(|(_, v)| *v).collect();
        let payloads = f.section_payloads(&versions).unwrap();
        for (version, payload) in &payloads {
            assert_eq!(trellis_base::stable_hash(payload), *version);
        }
        assert!(payloads.values().any(|p| p.len() == 2_000_000));

        // Two more translations without the big section: it is deleted once neither the
        // current manifest nor the one before names it.
        let second = sections(b"routes v2");
        let next = translation(&second, 8);
        let payload = |cluster: &str, section: &str| second.get(&(cluster.to_string(), section.to_string())).cloned();
        l.publish_translation(&next, &payload).unwrap();
        let later = f
            .wait_translation(stamped.stamp, Duration::from_secs(10))
            .unwrap()
            .expect("the next");
        assert_eq!(later.translation.revision, 8);
        let big_version = trellis_base::stable_hash(&big);
        assert!(
            f.section_payloads(&[big_version]).is_ok(),
            "the one before's sections stay a while"
        );
        let mut third = translation(&second, 9);
        third.report = Arc::from(&b"{}"[..]);
        l.publish_translation(&third, &payload).unwrap();
        assert!(
            f.section_payloads(&[big_version]).is_err(),
            "a section nobody names is deleted"
        );
        // Nothing new: waiting returns nothing.
        let deadline = Instant::now() + Duration::from_secs(10);
        let latest = loop {
            let latest = until_shared(&f);
            if latest.translation.revision == 9 {
                break latest;
            }
            assert!(Instant::now() < deadline, "the follower never saw revision 9");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            f.wait_translation(latest.stamp, Duration::from_millis(300))
                .unwrap()
                .is_none()
        );
    })
    .await;
    let _ = std::fs::remove_dir_all(&cluster.dir);
}
