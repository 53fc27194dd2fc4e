//! Generates the relay's gRPC service from a Rust description: no .proto file and no protoc
//! needed, the messages are prost derives in src/messages.rs.

fn main() {
    let connect = tonic_build::manual::Method::builder()
        .name("connect")
        .route_name("Connect")
        .input_type("crate::AgentMessage")
        .output_type("crate::ServerMessage")
        .codec_path("tonic_prost::ProstCodec")
        .client_streaming()
        .server_streaming()
        .build();
    let service = tonic_build::manual::Service::builder()
        .name("Relay")
        .package("trellis.relay.v1")
        .method(connect)
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
