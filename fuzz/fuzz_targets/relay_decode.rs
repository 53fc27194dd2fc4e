//! The relay's messages decoded from arbitrary bytes, as the management server (AgentMessage,
//! RegisterRequest, RenewRequest, SignIntermediateRequest) and the agent (ServerMessage,
//! CertificateResponse, SignIntermediateResponse) decode them, then the payloads inside as the
//! receiving side takes them (a config delta through the agent's receiver). Decoding may fail; it
//! must not panic or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use trellis_relay::{agent_message, server_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = trellis_relay::AgentMessage::decode(data) {
        match message.body {
            Some(agent_message::Body::Discovery(discovery)) => {
                let _ = serde_json::from_slice::<trellis_model::ClusterDiscovery>(&discovery.payload);
            }
            Some(agent_message::Body::Proxies(report)) => {
                let _ = serde_json::from_slice::<Vec<trellis_model::ProxyState>>(&report.payload);
            }
            _ => {}
        }
    }
    if let Ok(message) = trellis_relay::ServerMessage::decode(data)
        && let Some(server_message::Body::Delta(delta)) = message.body
    {
        // As the agent takes it: gathered, checked against its version, decoded section by section.
        let mut receiver = trellis_relay::delivery::Receiver::default();
        let _ = receiver.receive(delta, |_| Ok(()));
    }
    let _ = trellis_relay::RegisterRequest::decode(data);
    let _ = trellis_relay::RenewRequest::decode(data);
    let _ = trellis_relay::CertificateResponse::decode(data);
    let _ = trellis_relay::SignIntermediateRequest::decode(data);
    let _ = trellis_relay::SignIntermediateResponse::decode(data);
    // Length-delimited too: how a message arrives framed in a stream.
    let _ = trellis_relay::AgentMessage::decode_length_delimited(data);
});
