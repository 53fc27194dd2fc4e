//! Relay messages as prost derives.

/// Agent to management server.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentMessage {
    #[prost(oneof = "agent_message::Body", tags = "1, 2, 3, 4, 5, 6")]
    pub body: Option<agent_message::Body>,
}

pub mod agent_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Hello(super::Hello),
        #[prost(message, tag = "2")]
        Discovery(super::Discovery),
        #[prost(message, tag = "3")]
        Ack(super::Ack),
        #[prost(message, tag = "4")]
        Proxies(super::ProxyReport),
        #[prost(message, tag = "5")]
        DiscoveryPatch(super::DiscoveryPatch),
        #[prost(message, tag = "6")]
        ProxyConfig(super::ProxyConfigReply),
    }
}

/// First message of every stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    #[prost(string, tag = "1")]
    pub cluster: String,
    #[prost(string, tag = "2")]
    pub agent_version: String,
    /// The config version the agent is serving (from its cache), empty if none.
    #[prost(string, tag = "3")]
    pub last_applied_version: String,
    /// Where the agent's registration API listens (`trellis check` warns when it is off
    /// loopback: its read endpoints answer without credentials). Empty from older agents.
    #[prost(string, tag = "4")]
    pub registry_address: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Discovery {
    #[prost(string, tag = "1")]
    pub version: String,
    /// JSON `trellis_model::ClusterDiscovery`.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// The workloads changed since the discovery of version `base`, sent on the same stream as it:
/// a stream starts with a whole `Discovery`, then patches while the agent's gateway and add-ons
/// stay. A patch that does not follow what the server holds ends the stream (the agent
/// reconnects and reports whole).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryPatch {
    #[prost(string, tag = "1")]
    pub base: String,
    #[prost(string, tag = "2")]
    pub version: String,
    /// JSON `trellis_model::DiscoveryPatch`.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
}

/// Delivery state of the cluster's proxies, sent when it changes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyReport {
    /// JSON list of `{id, configVersion, inSync, nack, envoyVersion}`: `configVersion` is the relay config the
    /// proxy's resources were built from; `inSync` means Envoy acknowledged every type of them.
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
}

/// Reply to a Config: an empty `error` acknowledges, a non-empty one rejects.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub error: String,
}

/// Management server to agent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMessage {
    #[prost(oneof = "server_message::Body", tags = "2, 3, 4")]
    pub body: Option<server_message::Body>,
}

pub mod server_message {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Body {
        // Tag 1 was a whole config in one message: it broke past the message limit.
        #[prost(message, tag = "2")]
        Delta(super::ConfigDelta),
        #[prost(message, tag = "3")]
        MeshTrust(super::MeshTrust),
        #[prost(message, tag = "4")]
        ProxyConfigRequest(super::ProxyConfigRequest),
    }
}

/// An operator asks for one proxy's live Envoy config (`trellis proxy-config`): the agent reads
/// it from that Envoy's loopback admin and answers with a [`ProxyConfigReply`] of the same id.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyConfigRequest {
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    #[prost(string, tag = "2")]
    pub proxy_id: String,
}

/// The answer to a [`ProxyConfigRequest`]: Envoy's `/config_dump` (JSON; Envoy redacts private
/// keys in it), or why there is none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProxyConfigReply {
    #[prost(uint64, tag = "1")]
    pub request_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub config_dump: Vec<u8>,
    #[prost(string, tag = "3")]
    pub error: String,
}

/// The mesh's trust, sent when a stream opens and whenever it changes (a RootTrustPolicy
/// switched the root): the roots every proxy must accept, and which of them signs intermediates
/// now. An agent whose intermediate chains to another root asks for a new one. Certificates
/// only: no key ever travels here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MeshTrust {
    /// PEM certificates: the active root first, then the roots still trusted (passive).
    #[prost(string, tag = "1")]
    pub bundle_pem: String,
    /// Hex SHA-256 of the active root certificate (DER).
    #[prost(string, tag = "2")]
    pub active_root_sha256: String,
}

/// A change of one cluster's config, as sections (see `sections`): those that changed and the
/// names of those that went. A large change is cut into several messages with `more` set on
/// all but the last; the agent applies them together, once the last arrives.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigDelta {
    /// The config's version once this delta is applied.
    #[prost(string, tag = "1")]
    pub version: String,
    /// The version the agent must hold to apply it; empty: a whole config, replacing what it holds.
    #[prost(string, tag = "2")]
    pub base_version: String,
    #[prost(message, repeated, tag = "3")]
    pub upserts: Vec<Section>,
    #[prost(string, repeated, tag = "4")]
    pub removes: Vec<String>,
    #[prost(bool, tag = "5")]
    pub more: bool,
    /// The W3C `traceparent` of the push, so the agent's work on this config continues the
    /// trace of the apply that caused it; empty when the server exports no spans.
    #[prost(string, tag = "6")]
    pub traceparent: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Section {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    /// JSON of the section's value. `Bytes`, so that the server sends the one encoding it keeps
    /// for every cluster holding the section, never a copy per stream.
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: prost::bytes::Bytes,
}

impl AgentMessage {
    pub fn hello(hello: Hello) -> Self {
        AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        }
    }

    pub fn discovery(version: String, payload: Vec<u8>) -> Self {
        AgentMessage {
            body: Some(agent_message::Body::Discovery(Discovery { version, payload })),
        }
    }

    pub fn discovery_patch(base: String, version: String, payload: Vec<u8>) -> Self {
        AgentMessage {
            body: Some(agent_message::Body::DiscoveryPatch(DiscoveryPatch {
                base,
                version,
                payload,
            })),
        }
    }

    pub fn ack(version: String, error: String) -> Self {
        AgentMessage {
            body: Some(agent_message::Body::Ack(Ack { version, error })),
        }
    }
}

impl ServerMessage {
    pub fn delta(delta: ConfigDelta) -> Self {
        ServerMessage {
            body: Some(server_message::Body::Delta(delta)),
        }
    }

    pub fn mesh_trust(trust: MeshTrust) -> Self {
        ServerMessage {
            body: Some(server_message::Body::MeshTrust(trust)),
        }
    }

    pub fn proxy_config_request(request: ProxyConfigRequest) -> Self {
        ServerMessage {
            body: Some(server_message::Body::ProxyConfigRequest(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn messages_round_trip_through_protobuf() {
        let message = AgentMessage::ack("v1".into(), "bad route".into());
        let bytes = message.encode_to_vec();
        assert_eq!(AgentMessage::decode(bytes.as_slice()).unwrap(), message);
        let config = ServerMessage::delta(ConfigDelta {
            version: "abc".into(),
            upserts: vec![Section {
                name: "base".into(),
                version: 7,
                payload: b"{}".to_vec().into(),
            }],
            removes: vec!["upstream/x".into()],
            more: true,
            ..Default::default()
        });
        assert_eq!(
            ServerMessage::decode(config.encode_to_vec().as_slice()).unwrap(),
            config
        );
    }
}

/// First contact of a new agent, over TLS that authenticates the server only: a one-time token
/// and a CSR; the agent's private key never leaves it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    #[prost(string, tag = "1")]
    pub cluster: String,
    #[prost(string, tag = "2")]
    pub token: String,
    #[prost(string, tag = "3")]
    pub csr_pem: String,
}

/// A renewal, over mTLS with the current client certificate: the identity comes from it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenewRequest {
    #[prost(string, tag = "1")]
    pub csr_pem: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateResponse {
    /// The client certificate followed by the intermediates that signed it.
    #[prost(string, tag = "1")]
    pub cert_chain_pem: String,
}

/// An agent asks the mesh root to sign its cluster's intermediate CA.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignIntermediateRequest {
    #[prost(string, tag = "1")]
    pub csr_pem: String,
    /// Only read in insecure mode, where no client certificate names the cluster.
    #[prost(string, tag = "2")]
    pub cluster: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignIntermediateResponse {
    /// The cluster's intermediate CA certificate, then the chain above it up to (excluding) the root.
    #[prost(string, tag = "1")]
    pub chain_pem: String,
    #[prost(string, tag = "2")]
    pub mesh_root_pem: String,
    #[prost(string, tag = "3")]
    pub trust_domain: String,
}
