//! The add-ons serve gRPC over mutual TLS with a certificate their agent issued for the service
//! they registered as, and accept only client certificates of their own cluster's CA. On the
//! mesh `trellis up` runs: a plaintext gRPC client, a TLS client without a certificate, one with
//! a certificate of another CA under the same mesh root, and one from cluster-2's CA are all
//! refused by cluster-1's ext-auth and rate limiter; a certificate of cluster-1's CA gets
//! answers (the rate limiter refusing an absurd hits_addend), and traffic through Envoy works.
//! The agent signs add-on certificates only for a registered add-on's credential.

use trellis_testkit as common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use trellis_cli::up::LocalMesh;
use trellis_pki::CertifiedKey;

/// How a test client connects: `None` plaintext, else TLS with (client certificate or none, the
/// mesh root, the SPIFFE ID the add-on must present).
type Tls<'a> = Option<(Option<&'a CertifiedKey>, &'a str, &'a str)>;

/// A gRPC channel to `127.0.0.1:port`: plaintext with `None`, else TLS presenting the given
/// client certificate (or none); the server must present `expected_id`.
async fn channel(port: u16, tls: Tls<'_>) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let Some((client, root_pem, expected_id)) = tls else {
        return endpoint.connect().await.map_err(|e| format!("{e:?}"));
    };
    let mut config = trellis_pki::client_tls_config(client, root_pem, true).unwrap();
    // The add-on's certificate carries only its SPIFFE ID: check that, as Envoy does. The chain
    // to the mesh root is what Envoy checks on the real path (through Envoy, in the test); this
    // client is about what the add-ons accept.
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(ServerCheck::spiffe_id(expected_id)));
    let config = Arc::new(config);
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let config = config.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                let name = rustls::pki_types::ServerName::try_from("addon.mesh").unwrap();
                let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e:?}"))
}

/// One ext-auth check: Ok(status code of the answer) or the transport/gRPC error.
async fn check(port: u16, tls: Tls<'_>) -> Result<i32, String> {
    let mut client = AuthorizationClient::new(channel(port, tls).await?);
    let response = client
        .check(CheckRequest::default())
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.into_inner().status.map(|s| s.code).unwrap_or_default())
}

/// One rate-limit decision with `hits_addend`: Ok(overall code) or the error (its gRPC code,
/// when the call got that far).
async fn decide(port: u16, tls: Tls<'_>, hits_addend: u32) -> Result<i32, (Option<tonic::Code>, String)> {
    let mut client = RateLimitServiceClient::new(channel(port, tls).await.map_err(|e| (None, e))?);
    let request = RateLimitRequest {
        domain: "demo.per-user".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: "victim".into(),
            }],
            ..Default::default()
        }],
        hits_addend,
    };
    client
        .should_rate_limit(request)
        .await
        .map(|response| response.into_inner().overall_code)
        .map_err(|status| (Some(status.code()), format!("{status:?}")))
}

/// A workload certificate from a cluster's own CA, read from its agent's data directory (the
/// test plays the agent's operator).
fn cluster_cert(mesh: &LocalMesh, cluster: &str, spiffe_id: &str) -> CertifiedKey {
    let dir = mesh.dir.join(format!("agent-{cluster}")).join("mesh");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let ca = trellis_pki::Authority::from_pem(&read("ca-chain.pem"), &read("ca.key"), "").unwrap();
    ca.issue_workload_cert(spiffe_id, Duration::from_secs(3600), std::time::SystemTime::now())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_add_ons_answer_only_their_clusters_proxies_over_mutual_tls() {
    let mesh = demo_mesh_with_addons("addon-mtls").await;
    apply_addons_example(&mesh).await;

    // Traffic through Envoy: the proxies call both add-ons over mTLS.
    let call = |key: Option<&'static str>| {
        let mesh = &mesh;
        async move { api_via_frontend(mesh, &api_key_header(key)).await }
    };
    eventually("ext-auth answering through Envoy", || async {
        call(None).await.status == 401
    })
    .await;
    let allowed = call(Some("frontend-demo-key")).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(
        allowed.headers.iter().any(|(name, _)| name == "x-ratelimit-remaining"),
        "the rate limiter answered Envoy too: {:?}",
        allowed.headers
    );

    let cluster = mesh.cluster("cluster-1");
    let (ext_auth, limiter) = (cluster.addons[0].1, cluster.addons[2].1);
    let root = std::fs::read_to_string(mesh.dir.join("agent-cluster-1").join("mesh").join("root.pem")).unwrap();
    let td = "spiffe://trellis.local";
    let (ext_auth_id, limiter_id) = (
        format!("{td}/ns/gloo-mesh/sa/ext-auth-service"),
        format!("{td}/ns/gloo-mesh/sa/rate-limiter"),
    );
    let frontend = format!("{td}/ns/demo/sa/frontend");
    let own = cluster_cert(&mesh, "cluster-1", &frontend);
    let other_cluster = cluster_cert(&mesh, "cluster-2", &frontend);
    let other_ca = mesh_workload_cert(&mesh, &frontend);

    // A client with this cluster's CA gets answers: the refusals below are about the caller.
    assert!(
        check(ext_auth, Some((Some(&own), &root, &ext_auth_id))).await.is_ok(),
        "cluster-1's proxy identity is served"
    );
    assert_eq!(
        decide(limiter, Some((Some(&own), &root, &limiter_id)), 1).await,
        Ok(1),
        "OK decision for one hit"
    );
    let absurd = decide(limiter, Some((Some(&own), &root, &limiter_id)), 1_000_000).await;
    assert!(
        matches!(absurd, Err((Some(tonic::Code::InvalidArgument), _))),
        "an absurd hits_addend is refused, not counted: {absurd:?}"
    );

    let refused: [(&str, Tls<'_>); 4] = [
        ("plaintext", None),
        ("TLS without a client certificate", Some((None, &root, ""))),
        (
            "a certificate of another CA under the mesh root",
            Some((Some(&other_ca), &root, "")),
        ),
        (
            "a certificate of cluster-2's CA",
            Some((Some(&other_cluster), &root, "")),
        ),
    ];
    for (what, tls) in refused {
        let ext_auth_tls = tls.map(|(cert, root, _)| (cert, root, ext_auth_id.as_str()));
        let result = check(ext_auth, ext_auth_tls).await;
        assert!(result.is_err(), "ext-auth answered {what}: {result:?}");
        let limiter_tls = tls.map(|(cert, root, _)| (cert, root, limiter_id.as_str()));
        let result = decide(limiter, limiter_tls, 1).await;
        assert!(result.is_err(), "the rate limiter answered {what}: {result:?}");
        println!("refused by both add-ons: {what}");
    }
    // The agent issues add-on certificates only to a registered add-on's credential.
    let (_key, csr) = trellis_pki::new_key_and_csr("ext-auth-service").unwrap();
    let body = serde_json::to_vec(&serde_json::json!({ "csr": csr })).unwrap();
    for authorization in [None, Some("Bearer made-up-token")] {
        let headers: Vec<(&str, &str)> = authorization.map(|a| ("authorization", a)).into_iter().collect();
        let response = trellis_support::httpc::request(
            "POST",
            &format!(
                "http://127.0.0.1:{}/v1/addons/ext-auth/certificate",
                cluster.registry_port
            ),
            None,
            &headers,
            Some(("application/json", body.clone())),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(response.status, 401, "{authorization:?}: {}", response.body);
        assert!(!response.body.contains("CERTIFICATE"), "{}", response.body);
    }
    // Still serving the real proxies afterwards.
    assert_eq!(call(Some("frontend-demo-key")).await.status, 200);
    println!("add-ons: mTLS with their cluster's proxies only; traffic through Envoy unchanged");
    finish(mesh).await;
}
