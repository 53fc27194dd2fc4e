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
    let unary = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::{input}"))
            .output_type(format!("crate::{output}"))
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let service = tonic_build::manual::Service::builder()
        .name("Relay")
        .package("trellis.relay.v1")
        .method(connect)
        .method(unary("register", "Register", "RegisterRequest", "CertificateResponse"))
        .method(unary("renew", "Renew", "RenewRequest", "CertificateResponse"))
        .method(unary(
            "sign_intermediate",
            "SignIntermediate",
            "SignIntermediateRequest",
            "SignIntermediateResponse",
        ))
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
}
