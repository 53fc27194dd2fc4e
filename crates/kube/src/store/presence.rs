//! [`PresenceShare`] on Kubernetes: Secret `trellis-presence-<replica>` holds the agents whose
//! relay streams a replica holds, rewritten every couple of seconds with a counter that changes
//! each time. A record counts while its readers have seen it change within the last
//! [`LIVE`], by their own clocks (replicas' clocks need not agree); a record unchanged for
//! [`FORGOTTEN`] belongs to a replica that is gone (a pod replaced) and is deleted.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use trellis_store::{PresenceShare, StoreError, decode_presence, encode_presence};

use super::KubeStore;
use super::log::ROLE_LABEL;

const LIVE: Duration = Duration::from_secs(6);
const FORGOTTEN: Duration = Duration::from_secs(60);

type Result<T> = std::result::Result<T, StoreError>;

/// What this replica saw of each record: its resourceVersion, and since when.
#[derive(Default)]
pub(super) struct Seen {
    records: std::sync::Mutex<HashMap<String, (String, Instant)>>,
    puts: std::sync::atomic::AtomicU64,
}

/// A Secret name for any replica name: lowercase letters, digits and dashes, and a digest so
/// that two names that clean up alike stay apart.
fn record_name(replica: &str) -> String {
    let clean: String = replica
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let digest = &trellis_base::hash::sha256_hex(replica.as_bytes())[..8];
    format!("trellis-presence-{}-{digest}", clean.trim_matches('-'))
}

fn error(action: &str, error: kube::Error) -> StoreError {
    StoreError::Transaction(format!("Kubernetes store: cannot {action} agent presence: {error}"))
}

impl PresenceShare for KubeStore {
    fn put_presence(&self, replica: &str, agents: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let put = self.seen.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = BTreeMap::from([
            ("replica".to_string(), ByteString(replica.as_bytes().to_vec())),
            ("agents".to_string(), ByteString(encode_presence(agents))),
            // Changes at every put, so that readers see the record renewed.
            (
                "put".to_string(),
                ByteString(format!("{}/{put}", std::process::id()).into_bytes()),
            ),
        ]);
        let name = record_name(replica);
        self.block(move |shared| async move {
            let api = shared.log.secrets();
            let mut secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([(ROLE_LABEL.to_string(), "presence".to_string())])),
                    ..Default::default()
                },
                type_: Some(super::SECRET_TYPE.into()),
                data: Some(data),
                ..Default::default()
            };
            match api.get_opt(&name).await.map_err(|e| error("read", e))? {
                Some(existing) => {
                    secret.metadata.resource_version = existing.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &secret).await
                }
                None => api.create(&PostParams::default(), &secret).await,
            }
            .map(|_| ())
            .map_err(|e| error("write", e))
        })
    }

    fn presences(&self) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>> {
        let secrets = self.block(|shared| async move {
            let api = shared.log.secrets();
            let listed = api
                .list(&ListParams::default().labels(&format!("{ROLE_LABEL}=presence")))
                .await
                .map_err(|e| error("list", e))?;
            Ok(listed.items)
        })?;
        let now = Instant::now();
        let mut all = BTreeMap::new();
        let mut forgotten = Vec::new();
        {
            let mut seen = self.seen.records.lock().expect("presence lock");
            seen.retain(|name, _| secrets.iter().any(|s| s.metadata.name.as_deref() == Some(name)));
            for secret in &secrets {
                let (Some(name), Some(version)) = (&secret.metadata.name, &secret.metadata.resource_version) else {
                    continue;
                };
                let entry = seen.entry(name.clone()).or_insert_with(|| (version.clone(), now));
                if &entry.0 != version {
                    *entry = (version.clone(), now);
                }
                let unchanged_for = now.duration_since(entry.1);
                if unchanged_for >= FORGOTTEN {
                    forgotten.push((name.clone(), version.clone()));
                }
                if unchanged_for >= LIVE {
                    continue;
                }
                let field = |key: &str| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone());
                let (Some(replica), Some(agents)) = (field("replica"), field("agents")) else {
                    continue;
                };
                let agents = decode_presence(&format!("presence record {name}"), &agents)?;
                all.insert(String::from_utf8_lossy(&replica).into_owned(), agents);
            }
        }
        if !forgotten.is_empty() {
            // Deleted only as seen: a replica that came back and wrote meanwhile keeps its record.
            let _ = self.block(move |shared| async move {
                let api = shared.log.secrets();
                for (name, version) in forgotten {
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            resource_version: Some(version),
                            uid: None,
                        }),
                        ..Default::default()
                    };
                    let _ = api.delete(&name, &params).await;
                }
                Ok(())
            });
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::record_name;

    #[test]
    fn record_names_are_valid_and_distinct() {
        let a = record_name("127.0.0.1:9900");
        let b = record_name("127.0.0.1-9900");
        assert_ne!(a, b);
        for name in [&a, &b, &record_name("trellis-mgmt-5d9c7b-x2x7q")] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }
}
