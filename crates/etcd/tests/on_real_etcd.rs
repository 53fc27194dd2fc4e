//! The store contract and leader election on a real etcd (TLS, client certificates required).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_api::Resource;
use trellis_etcd::{EtcdClient, EtcdStore, Leadership, LeadershipConfig};
use trellis_model::{ClusterDiscovery, DiscoveryPatch, Workload, WorkloadKey};
use trellis_store::{
    AccessStore, ApiTokenRecord, ApplyAction, AuditRecord, AuditRetention, Change, IntermediateClaim,
    IntermediateRecord, IssuanceStore, SharedCluster, SharedTranslation, SilenceRecord, SilenceStore, Store,
    StoreError, TokenCheck, TokenRecord, TranslationShare, Watch,
};
use trellis_testkit::etcd::Etcd;

fn vd(name: &str, host: &str) -> Resource {
    let text = format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualDestination\nmetadata: {{name: {name}, namespace: demo}}\nspec: {{hosts: [{host}], ports: [{{number: 80}}]}}\n"
    );
    trellis_api::parse_one("test", &text).unwrap()
}

fn dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trellis-etcd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn workload(name: &str, address: &str) -> Workload {
    Workload {
        name: name.into(),
        namespace: "demo".into(),
        service: "svc".into(),
        address: address.into(),
        ..Default::default()
    }
}

/// Runs blocking store calls off the test's runtime, as the management server's threads do.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_config_discovery_and_records_on_etcd() {
    let etcd = Etcd::start(&dir("contract")).await;
    let config = etcd.config("/contract/");
    let (a, b) = {
        let config = config.clone();
        blocking(move || {
            (
                Arc::new(EtcdStore::open(&config).unwrap()),
                Arc::new(EtcdStore::open(&config).unwrap()),
            )
        })
        .await
    };
    let (a2, b2) = (a.clone(), b.clone());
    blocking(move || {
        let (a, b) = (a2, b2);
        let start = b.revision();
        // Generations and actions as in the embedded store.
        let first = a.apply(vec![vd("a", "a.mesh"), vd("b", "b.mesh")]).unwrap();
        assert!(
            first
                .iter()
                .all(|o| o.action == ApplyAction::Created && o.generation == 1)
        );
        assert_eq!(
            a.apply(vec![vd("a", "a.mesh")]).unwrap()[0].action,
            ApplyAction::Unchanged
        );
        let changed = b.apply(vec![vd("a", "a2.mesh")]).unwrap();
        assert_eq!((changed[0].action, changed[0].generation), (ApplyAction::Configured, 2));
        // The other replica's feed carries every write, in order, with the resources.
        let Watch::Changes { revision, changes } = b.watch(start, Duration::from_secs(5)) else {
            panic!("replica b's feed reaches back to its start");
        };
        assert_eq!(revision, start + 3, "one revision per changed resource");
        let keys: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Resource { key, resource } => format!("{key} {}", resource.is_some()),
                other => panic!("unexpected change {other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "VirtualDestination/demo/a true",
                "VirtualDestination/demo/b true",
                "VirtualDestination/demo/a true"
            ]
        );
        let all = a.list().unwrap();
        assert_eq!(all.len(), 2);
        let stored_a = b.get(&vd("a", "x").key()).unwrap().unwrap();
        assert_eq!(stored_a.metadata.generation, 2);
        assert!(stored_a.metadata.creation_revision < all[1].metadata.creation_revision);
        let deleted = a.delete(&[vd("a", "x").key(), vd("zz", "x").key()]).unwrap();
        assert_eq!(deleted.iter().map(|(_, e)| *e).collect::<Vec<_>>(), [true, false]);
        assert!(b.get(&vd("a", "x").key()).unwrap().is_none());

        // Discovery: whole, patched, listed by either replica; a patch without a base refused.
        let mut discovery = ClusterDiscovery {
            cluster: "c1".into(),
            workloads: vec![workload("w1", "10.0.0.1"), workload("w2", "10.0.0.2")],
            ..Default::default()
        };
        a.put_discovery(&discovery).unwrap();
        b.patch_discovery(&DiscoveryPatch {
            cluster: "c1".into(),
            upserts: vec![workload("w3", "10.0.0.3")],
            removes: vec![WorkloadKey::of(&workload("w1", ""))],
            workloads: 2,
        })
        .unwrap();
        discovery.workloads = vec![workload("w2", "10.0.0.2"), workload("w3", "10.0.0.3")];
        discovery.normalize();
        assert_eq!(a.discoveries().unwrap(), vec![discovery]);
        let orphan = DiscoveryPatch {
            cluster: "nowhere".into(),
            ..Default::default()
        };
        assert!(matches!(a.patch_discovery(&orphan), Err(StoreError::NoDiscovery(_))));
        b.delete_discovery("c1").unwrap();
        assert!(a.discoveries().unwrap().is_empty());

        // Certificates and revocation.
        a.record_certificate("aa", "c1").unwrap();
        a.record_certificate("bb", "c2").unwrap();
        assert_eq!(b.revoke_cluster_certificates("c1").unwrap(), 1);
        assert!(a.is_revoked("aa").unwrap() && !a.is_revoked("bb").unwrap());

        // Audit: sequence numbers shared, pruned by count.
        let keep = AuditRetention {
            max_records: 3,
            max_age_secs: 1000,
        };
        for i in 0..5u64 {
            let store = if i % 2 == 0 { &a } else { &b };
            let record = AuditRecord {
                seq: 0,
                time: 100 + i,
                user: "alice".into(),
                groups: vec![],
                authenticated_by: "token".into(),
                action: "apply".into(),
                target: format!("t{i}"),
                result: "ok".into(),
                message: String::new(),
                diff: vec![],
            };
            assert_eq!(store.append_audit(record, keep, 105).unwrap(), i + 1);
        }
        let targets: Vec<_> = b.audit_records().unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["t2", "t3", "t4"]);

        // API tokens: names unique across replicas.
        let token = ApiTokenRecord {
            name: "ci".into(),
            user: "ci-bot".into(),
            groups: vec![],
            created_at: 1,
            expires_at: None,
            created_by: "admin".into(),
        };
        assert!(a.create_api_token("hash-1", &token).unwrap());
        assert!(!b.create_api_token("hash-2", &token).unwrap(), "a name is used once");
        assert_eq!(b.api_token("hash-1").unwrap().unwrap().user, "ci-bot");
        assert!(b.revoke_api_token("ci").unwrap());
        assert!(a.api_token("hash-1").unwrap().is_none());

        // Silences.
        let silence = SilenceRecord {
            code: "TRL0001".into(),
            target: Some("cluster/c1".into()),
            created_by: "admin".into(),
            created_at: 1,
        };
        a.put_silence(&silence).unwrap();
        assert_eq!(b.silences().unwrap(), vec![silence]);
        assert!(b.delete_silence("TRL0001", Some("cluster/c1")).unwrap());
        assert!(!a.delete_silence("TRL0001", Some("cluster/c1")).unwrap());
    })
    .await;
    drop((a, b));

    // A token works once even when both replicas present it at the same moment, and one
    // intermediate per cluster is recorded however many replicas sign at once.
    for round in 0..5 {
        let (a, b) = {
            let config = config.clone();
            blocking(move || (EtcdStore::open(&config).unwrap(), EtcdStore::open(&config).unwrap())).await
        };
        let hash = format!("token-{round}");
        let record = TokenRecord {
            cluster: "c1".into(),
            expires_at: u64::MAX,
            used: false,
        };
        a.put_token(&hash, &record).unwrap();
        let (a, b) = (Arc::new(a), Arc::new(b));
        let claim = |store: Arc<EtcdStore>, serial: &str| {
            let hash = hash.clone();
            let intermediate = IntermediateRecord {
                cluster: format!("race-{round}"),
                serial: serial.into(),
                issued_at: 1000,
                not_after: 2000,
                renewable_at: 1600,
                revoked: false,
                public_key_sha256: format!("key-{serial}"),
                root_sha256: String::new(),
            };
            std::thread::spawn(move || {
                (
                    store.consume_token(&hash, 10).unwrap(),
                    store.claim_intermediate(&intermediate, 1001).unwrap(),
                )
            })
        };
        let one = claim(a.clone(), "01");
        let two = claim(b.clone(), "02");
        let (one, two) = (one.join().unwrap(), two.join().unwrap());
        let accepted = [&one.0, &two.0]
            .iter()
            .filter(|c| matches!(c, TokenCheck::Accepted { .. }))
            .count();
        assert_eq!(accepted, 1, "round {round}: {one:?} {two:?}");
        let recorded = [&one.1, &two.1]
            .iter()
            .filter(|c| matches!(c, IntermediateClaim::Recorded))
            .count();
        assert_eq!(recorded, 1, "round {round}: {one:?} {two:?}");
        assert_eq!(a.void_cluster_tokens("c1").unwrap(), 0, "the one token is used");
        assert_eq!(
            b.revoke_cluster_intermediates(&format!("race-{round}"), 1001).unwrap(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_survives_an_etcd_restart_and_refuses_clients_without_a_certificate() {
    let mut etcd = Etcd::start(&dir("restart")).await;
    let config = etcd.config("/restart/");
    let store = {
        let config = config.clone();
        Arc::new(blocking(move || EtcdStore::open(&config).unwrap()).await)
    };
    let writer = store.clone();
    let before = blocking(move || {
        writer.apply(vec![vd("kept", "kept.mesh")]).unwrap();
        writer.revision()
    })
    .await;
    etcd.restart().await;
    // The same store carries on once etcd is back: its feed follows writes made after.
    let writer = store.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = blocking(move || {
        loop {
            match writer.apply(vec![vd("after", "after.mesh")]) {
                Ok(_) => break writer.watch(before, Duration::from_secs(5)),
                Err(error) => {
                    assert!(Instant::now() < deadline, "no write 30 s after etcd restarted: {error}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    })
    .await;
    let Watch::Changes { changes, .. } = after else {
        panic!("the feed follows across the restart")
    };
    assert_eq!(changes.len(), 1, "{changes:?}");
    let reader = store.clone();
    assert_eq!(blocking(move || reader.list().unwrap().len()).await, 2);

    // A reopened store starts at the shared revision and makes older watchers read everything.
    let reopened = {
        let config = config.clone();
        blocking(move || EtcdStore::open(&config).unwrap()).await
    };
    assert_eq!(reopened.revision(), before + 1);
    assert_eq!(
        reopened.watch(before, Duration::ZERO),
        Watch::Resync { revision: before + 1 }
    );

    // Without a client certificate etcd refuses the connection, and the error says where.
    let mut anonymous = config.clone();
    anonymous.client_identity = None;
    anonymous.timeout = Duration::from_secs(2);
    let refused = blocking(move || EtcdStore::open(&anonymous).err()).await;
    let message = refused
        .expect("etcd refuses a client without a certificate")
        .to_string();
    assert!(
        message.contains(&etcd.endpoint()) || message.contains("did not answer"),
        "{message}"
    );
    // Nor does a client that does not trust etcd's CA get through.
    let mut untrusting = config.clone();
    untrusting.ca_pem = None;
    untrusting.timeout = Duration::from_secs(2);
    assert!(blocking(move || EtcdStore::open(&untrusting).is_err()).await);
}

/// A replica's campaign on the current runtime: its client lives and dies with that runtime.
fn leadership(etcd: &Etcd, name: &str) -> Leadership {
    let client = EtcdClient::connect(&etcd.config("/election/")).unwrap();
    Leadership::start(
        client,
        LeadershipConfig {
            key: "/election/leader".into(),
            identity: name.into(),
            ttl: Duration::from_secs(2),
        },
    )
}

async fn leaders(replicas: &[(&str, &Leadership)]) -> Vec<String> {
    replicas
        .iter()
        .filter(|(_, l)| l.is_leader())
        .map(|(name, _)| name.to_string())
        .collect()
}

async fn until_one_leader(replicas: &[(&str, &Leadership)], within: Duration) -> (String, Duration) {
    let started = Instant::now();
    loop {
        let leading = leaders(replicas).await;
        if leading.len() == 1 {
            return (leading[0].clone(), started.elapsed());
        }
        assert!(leading.len() < 2, "two leaders at once: {leading:?}");
        assert!(started.elapsed() < within, "no leader after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_and_another_takes_over_within_the_lease_when_it_dies() {
    let etcd = Etcd::start(&dir("election")).await;
    // A replica in its own runtime, so that dropping the runtime kills it as SIGKILL would: no
    // resignation, its lease simply stops being renewed.
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed = {
        let _entered = doomed_runtime.enter();
        leadership(&etcd, "r1")
    };
    let first = Instant::now();
    while !doomed.is_leader() {
        assert!(first.elapsed() < Duration::from_secs(10), "the first replica never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r2 = leadership(&etcd, "r2");
    let r3 = leadership(&etcd, "r3");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        leaders(&[("r2", &r2), ("r3", &r3)]).await,
        Vec::<String>::new(),
        "r1 still leads"
    );
    assert_eq!(r2.leader(), "r1", "followers know who leads");
    // Kill r1.
    drop(doomed);
    std::thread::spawn(move || drop(doomed_runtime)).join().unwrap();
    let (next, took) = until_one_leader(&[("r2", &r2), ("r3", &r3)], Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "a new leader took {took:?}");
    // It stays alone for several lease periods.
    for _ in 0..30 {
        assert_eq!(leaders(&[("r2", &r2), ("r3", &r3)]).await, vec![next.clone()]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A leader that resigns hands over at once, without waiting for its lease.
    let (leader, follower) = if next == "r2" {
        (r2, ("r3", r3))
    } else {
        (r3, ("r2", r2))
    };
    let resigned = Instant::now();
    leader.resign().await;
    let (after, _) = until_one_leader(&[(follower.0, &follower.1)], Duration::from_secs(5)).await;
    assert_eq!(after, follower.0);
    assert!(
        resigned.elapsed() < Duration::from_secs(2),
        "hand-over took {:?}",
        resigned.elapsed()
    );
}

/// A translation of one cluster whose sections are `sections` (name, payload).
fn translation(revision: u64, sections: &[(&str, Vec<u8>)]) -> (SharedTranslation, HashMap<String, Arc<[u8]>>) {
    let payloads: HashMap<String, Arc<[u8]>> = sections
        .iter()
        .map(|(name, payload)| (name.to_string(), Arc::from(payload.clone())))
        .collect();
    let shared = SharedTranslation {
        revision,
        traceparent: None,
        report: Arc::from(format!("{{\"revision\":{revision}}}").into_bytes()),
        clusters: [(
            "c1".to_string(),
            SharedCluster {
                version: format!("v{revision}"),
                sections: sections
                    .iter()
                    .map(|(name, payload)| (name.to_string(), trellis_base::stable_hash(payload)))
                    .collect(),
            },
        )]
        .into(),
    };
    (shared, payloads)
}

fn publish(store: &EtcdStore, revision: u64, sections: &[(&str, Vec<u8>)]) -> SharedTranslation {
    let (shared, payloads) = translation(revision, sections);
    store
        .publish_translation(&shared, &|_, section| payloads.get(section).cloned())
        .unwrap();
    shared
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leaders_translation_reaches_another_replica_and_old_sections_are_swept() {
    let etcd = Etcd::start(&dir("share")).await;
    let config = etcd.config("/share/");
    blocking(move || {
        let leader = EtcdStore::open(&config).unwrap();
        let follower = EtcdStore::open(&config).unwrap();
        assert!(
            follower
                .wait_translation(0, Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
        // A section larger than etcd takes in one request travels in chunks.
        let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let first = publish(
            &leader,
            1,
            &[("base", b"{\"base\":1}".to_vec()), ("vhost/a", large.clone())],
        );
        let got = follower
            .wait_translation(0, Duration::from_secs(5))
            .unwrap()
            .expect("shared");
        assert_eq!(got.translation, first);
        let versions: Vec<u64> = first.clusters["c1"].sections.iter().map(|(_, v)| *v).collect();
        let payloads = follower.section_payloads(&versions).unwrap();
        assert_eq!(&*payloads[&versions[1]], large.as_slice());

        // The next one is waited for past the stamp held, and shares the section it keeps.
        let second = publish(
            &leader,
            2,
            &[("base", b"{\"base\":2}".to_vec()), ("vhost/a", large.clone())],
        );
        let next = follower
            .wait_translation(got.stamp, Duration::from_secs(5))
            .unwrap()
            .expect("the next");
        assert_eq!(next.translation, second);
        assert!(
            follower
                .wait_translation(next.stamp, Duration::from_millis(200))
                .unwrap()
                .is_none()
        );

        // Two translations later the first one's own section is gone; the shared one stays.
        publish(
            &leader,
            3,
            &[("base", b"{\"base\":3}".to_vec()), ("vhost/a", large.clone())],
        );
        assert!(
            follower.section_payloads(&versions[..1]).is_err(),
            "a section no manifest names is swept"
        );
        assert!(follower.section_payloads(&versions[1..]).is_ok());

        // A new leader sweeps what the old one left and no manifest of its own names.
        drop(leader);
        let successor = EtcdStore::open(&config).unwrap();
        publish(&successor, 4, &[("base", b"{\"base\":4}".to_vec())]);
        assert!(
            follower.section_payloads(&versions[1..]).is_err(),
            "the old leader's sections are swept"
        );
        let last = follower
            .wait_translation(next.stamp, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(last.translation.revision, 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_at_a_time_holds_the_write_lock_and_the_next_sees_its_writes() {
    let etcd = Etcd::start(&dir("lock")).await;
    let config = etcd.config("/lock/");
    blocking(move || {
        let a = Arc::new(EtcdStore::open(&config).unwrap());
        let b = Arc::new(EtcdStore::open(&config).unwrap());
        let held = a.lock_writes().unwrap();
        assert!(held.is_shared());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let lock = b.lock_writes().unwrap();
                // Taken only after A's write and release: B's view (its feed, which admission
                // reads) already holds the write.
                tx.send((Instant::now(), b.revision())).unwrap();
                drop(lock);
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "B took the lock A holds");
        a.apply(vec![vd("locked", "locked.mesh.internal")]).unwrap();
        let written = a.revision();
        let released = Instant::now();
        drop(held);
        let (taken, seen) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(taken >= released);
        assert!(
            seen >= written,
            "B's view ({seen}) lacked A's write ({written}) when it took the lock"
        );
        waiter.join().unwrap();
        // A holder that dies loses the lock when its lease runs out.
        let lost = a.lock_writes().unwrap();
        std::mem::forget(lost);
        drop(a);
        let started = Instant::now();
        drop(b.lock_writes().unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    })
    .await;
}
