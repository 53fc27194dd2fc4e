//! Where agents are connected, across replicas: each replica records the agents whose relay
//! stream it holds, every couple of seconds, and reads the others' records, so that any
//! replica's cluster list, `trellis check` and UI show an agent connected wherever it is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use trellis_store::PresenceShare;

use crate::state::{AgentStatus, Mgmt};

/// How often records are put and read: well within their few seconds of life.
const EVERY: Duration = Duration::from_secs(2);

pub async fn share(mgmt: Arc<Mgmt>, presence: Arc<dyn PresenceShare>) {
    let Some(replica) = mgmt.replica.clone() else { return };
    loop {
        let connected: BTreeMap<String, Vec<u8>> = mgmt
            .agents()
            .into_iter()
            .filter(|(_, status)| status.connected)
            .map(|(cluster, status)| (cluster, serde_json::to_vec(&status).expect("statuses serialize")))
            .collect();
        let (presence_io, name) = (presence.clone(), replica.clone());
        let shared = tokio::task::spawn_blocking(move || {
            presence_io.put_presence(&name, &connected)?;
            presence_io.presences()
        })
        .await;
        match shared {
            Ok(Ok(all)) => *mgmt.elsewhere.lock().expect("presence lock") = elsewhere(&replica, all),
            Ok(Err(error)) => tracing::warn!(%error, "cannot share where agents are connected"),
            Err(error) => tracing::warn!(%error, "cannot share where agents are connected"),
        }
        if mgmt.is_stopping() {
            return;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// The agents other replicas hold, by cluster; the most recently connected wins where two
/// replicas claim one (an agent that just moved).
fn elsewhere(
    replica: &str,
    all: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> BTreeMap<String, (String, AgentStatus)> {
    let mut found: BTreeMap<String, (String, AgentStatus)> = BTreeMap::new();
    for (other, agents) in all.into_iter().filter(|(other, _)| other != replica) {
        for (cluster, status) in agents {
            let Ok(status) = serde_json::from_slice::<AgentStatus>(&status) else {
                continue;
            };
            if found.get(&cluster).is_none_or(|(_, held)| held.since < status.since) {
                found.insert(cluster, (other.clone(), status));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(since: u64) -> Vec<u8> {
        serde_json::to_vec(&AgentStatus {
            connected: true,
            since,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn other_replicas_agents_count_and_the_latest_connection_wins() {
        let all = BTreeMap::from([
            ("r1".to_string(), BTreeMap::from([("c1".to_string(), status(10))])),
            (
                "r2".to_string(),
                BTreeMap::from([("c1".to_string(), status(20)), ("c2".to_string(), status(5))]),
            ),
            ("me".to_string(), BTreeMap::from([("c3".to_string(), status(1))])),
        ]);
        let found = elsewhere("me", all);
        assert_eq!(found["c1"].0, "r2", "the agent moved to r2 last");
        assert_eq!(found["c2"].0, "r2");
        assert!(
            !found.contains_key("c3"),
            "this replica's own records are not elsewhere"
        );
    }
}
