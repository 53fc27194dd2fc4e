//! The agent's side of discovery on a relay stream: the whole discovery first, then patches of
//! the workloads that changed, so a pod moving in a large cluster sends one workload.

use trellis_model::{ClusterDiscovery, DiscoveryPatch};

use crate::AgentMessage;

/// What one stream has reported; a new stream starts with a new one.
#[derive(Default)]
pub struct DiscoveryReporter {
    /// The version and content last sent on this stream.
    sent: Option<(u64, ClusterDiscovery)>,
}

impl DiscoveryReporter {
    /// The message that brings the server to `discovery`, or `None` when it holds that
    /// already. Versions count the reports of this stream: the server checks that each patch
    /// follows the report it holds.
    pub fn report(&mut self, mut discovery: ClusterDiscovery) -> Option<AgentMessage> {
        // Patches are computed between sorted lists.
        discovery.normalize();
        let (message, version) = match &self.sent {
            Some((_, sent)) if *sent == discovery => return None,
            Some((base, sent)) => match DiscoveryPatch::between(sent, &discovery) {
                Some(patch) => {
                    let payload = serde_json::to_vec(&patch).expect("patches serialize");
                    let message = AgentMessage::discovery_patch(base.to_string(), (base + 1).to_string(), payload);
                    (message, base + 1)
                }
                None => whole(&discovery, base + 1),
            },
            None => whole(&discovery, 1),
        };
        self.sent = Some((version, discovery));
        Some(message)
    }
}

fn whole(discovery: &ClusterDiscovery, version: u64) -> (AgentMessage, u64) {
    let payload = serde_json::to_vec(discovery).expect("discovery serializes");
    (AgentMessage::discovery(version.to_string(), payload), version)
}

#[cfg(test)]
mod tests {
    use trellis_model::{GatewayAddress, Workload};

    use super::*;
    use crate::agent_message::Body;

    fn discovery(addresses: &[&str]) -> ClusterDiscovery {
        ClusterDiscovery {
            cluster: "c1".to_string(),
            workloads: addresses
                .iter()
                .enumerate()
                .map(|(i, address)| Workload {
                    name: format!("w{i}"),
                    namespace: "demo".to_string(),
                    service: "svc".to_string(),
                    address: address.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_stream_reports_whole_then_patches_and_whole_again_when_more_than_workloads_change() {
        let mut reporter = DiscoveryReporter::default();
        let first = reporter.report(discovery(&["10.0.0.1", "10.0.0.2"])).unwrap();
        assert!(matches!(first.body, Some(Body::Discovery(ref d)) if d.version == "1"));
        assert!(
            reporter.report(discovery(&["10.0.0.1", "10.0.0.2"])).is_none(),
            "nothing changed"
        );

        let Some(Body::DiscoveryPatch(patch)) = reporter.report(discovery(&["10.0.0.1", "10.0.0.9"])).unwrap().body
        else {
            panic!("a moved workload goes as a patch");
        };
        assert_eq!((patch.base.as_str(), patch.version.as_str()), ("1", "2"));
        let sent: DiscoveryPatch = serde_json::from_slice(&patch.payload).unwrap();
        assert_eq!((sent.upserts.len(), sent.removes.len(), sent.workloads), (1, 0, 2));
        assert_eq!(sent.upserts[0].address, "10.0.0.9");

        let mut with_gateway = discovery(&["10.0.0.1", "10.0.0.9"]);
        with_gateway.east_west_gateway = Some(GatewayAddress {
            host: "127.0.0.1".to_string(),
            port: 15443,
        });
        let again = reporter.report(with_gateway).unwrap();
        assert!(matches!(again.body, Some(Body::Discovery(ref d)) if d.version == "3"));
    }
}
