//! `POST /v1/addons/{ext-auth|rate-limiter}/certificate`: a mesh identity for a registered add-on,
//! so it can serve gRPC over mTLS to this cluster's proxies.
//!
//! ```text
//!  add-on: key + CSR (key stays in its memory) ──POST {csr}, Bearer <registration token>──▶ agent
//!  agent:  signs spiffe://<td>/ns/<namespace>/sa/<name> of the registration with the cluster CA
//!          ◀── {spiffeId, certChain, clientCa, meshRoot}
//! ```
//!
//! The identity is the one the add-on registered as (what `destinationServer` references and
//! what the proxies check), never what the CSR asks for: a token proves the registration, the
//! registration decides the name. `clientCa` is this cluster's intermediate: the add-on accepts
//! only client certificates it issued, i.e. this cluster's proxies.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::json;

use super::Agent;
use super::registry::{AddonKind, ProxyRegistration, RegistryError, bearer};

/// Lifetime of an add-on's certificate, like the sidecars' default: short, since nothing revokes
/// it; the add-on renews at two thirds.
pub const ADDON_CERT_TTL: Duration = Duration::from_secs(3600);

/// Tolerated clock difference between the agent and the proxies checking the certificate.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// PEM certificate signing request for a key the add-on generated.
    pub csr: String,
}

pub async fn issue(
    State((agent, _)): State<(Arc<Agent>, trellis_xds::ProxyStatusBoard)>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Json(request): Json<CertificateRequest>,
) -> Response {
    let Some(kind) = AddonKind::parse(&kind) else {
        return AddonKind::unknown(&kind);
    };
    let registration = bearer(&headers)
        .and_then(|token| agent.registry.addon_for_token(kind, token))
        .and_then(|id| agent.registry.get(&id));
    let Some(ProxyRegistration::AddOn(addon)) = registration else {
        tracing::warn!(
            kind = kind.as_str(),
            "add-on certificate refused: no credential of a registered add-on of this kind"
        );
        return RegistryError::AddonCredentialRequired(kind.as_str()).into_response();
    };
    let Some(ca) = agent.mesh.borrow().clone() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "this cluster's CA is not signed by the management server yet; retry shortly"})),
        )
            .into_response();
    };
    let spiffe_id = trellis_model::spiffe_id(&ca.trust_domain, &addon.namespace, &addon.name);
    match sign(&ca.ca, &request.csr, &spiffe_id, ADDON_CERT_TTL, SystemTime::now()) {
        Ok(cert_chain) => {
            tracing::info!(kind = kind.as_str(), spiffe_id, "issued an add-on certificate");
            Json(json!({
                "spiffeId": spiffe_id,
                "certChain": cert_chain,
                "clientCa": first_certificate(&ca.ca.cert_pem),
                "meshRoot": ca.root_pem,
            }))
            .into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("cannot sign the add-on's CSR: {error:#}")})),
        )
            .into_response(),
    }
}

/// The first PEM certificate of a bundle (the cluster CA's own, without what it chains to).
fn first_certificate(pem: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    match pem.find(END) {
        Some(end) => format!("{}\n", &pem[..end + END.len()]),
        None => pem.to_string(),
    }
}

/// A workload certificate (serverAuth and clientAuth, the SPIFFE ID as the only name) for the
/// key in `csr_pem`, signed by the cluster CA; returns the leaf followed by the cluster CA,
/// which is what a peer needs to chain it to the mesh root. The CSR's subject and names are
/// ignored, and its signature must verify (the requester holds the key).
pub fn sign(
    ca: &trellis_pki::Authority,
    csr_pem: &str,
    spiffe_id: &str,
    ttl: Duration,
    now: SystemTime,
) -> anyhow::Result<String> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| anyhow::anyhow!("not a valid PEM certificate signing request ({e})"))?;
    let ca_der = trellis_pki::pem_to_der_certs(&ca.cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the cluster CA has no certificate"))?;
    let ca_info = trellis_pki::inspect_der(&ca_der)?;
    // Never past the CA itself: a peer would refuse the chain from then on anyway.
    let not_after = (now + ttl).min(ca_info.not_after);
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    anyhow::ensure!(not_after > now, "the cluster CA has expired");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| anyhow::anyhow!("no randomness for a serial number"))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::from_pem(&ca.key.0).map_err(|e| anyhow::anyhow!("the cluster CA key ({e})"))?;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), key)
        .map_err(|e| anyhow::anyhow!("the cluster CA certificate ({e})"))?;
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(|e| anyhow::anyhow!("signing ({e})"))?;
    Ok(format!("{}{}", cert.pem(), first_certificate(&ca.cert_pem)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mesh root and a cluster CA under it.
    fn mk_cluster_ca() -> (trellis_pki::Authority, trellis_pki::Authority) {
        let now = SystemTime::now();
        let root = trellis_pki::Authority::generate_root("mesh root", Duration::from_secs(86400), now).unwrap();
        let intermediate = root
            .generate_intermediate("cluster-1", Duration::from_secs(86400), now)
            .unwrap();
        (root, intermediate)
    }

    #[test]
    fn signs_the_registered_identity_not_what_the_csr_asks_for() {
        let (root, ca) = mk_cluster_ca();
        let (_key, csr) = trellis_pki::new_key_and_csr("spiffe://trellis.local/ns/kube-system/sa/admin").unwrap();
        let id = "spiffe://trellis.local/ns/gloo-mesh/sa/ext-auth-service";
        let now = SystemTime::now();
        let chain = sign(&ca, &csr, id, ADDON_CERT_TTL, now).unwrap();
        let info = trellis_pki::inspect_pem(&chain).unwrap();
        assert_eq!(info.uris, [id]);
        assert!(info.dns_names.is_empty() && info.subject_cn.is_none() && !info.is_ca);
        assert!(info.not_after <= now + ADDON_CERT_TTL);
        // The chain verifies to the mesh root as a server and as a client certificate.
        let certs: Vec<CertificateDer> = trellis_pki::pem_to_der_certs(&chain)
            .unwrap()
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let roots = Arc::new(trellis_pki::root_store(&root.root_pem()).unwrap());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&certs[0], &certs[1..], rustls::pki_types::UnixTime::now())
            .expect("a client certificate of the mesh");
    }

    /// The add-on side against an agent that issues 20-second certificates: it installs the
    /// first and replaces it before it expires, each time with a CSR of its own.
    #[tokio::test]
    async fn an_add_on_renews_its_certificate_before_it_expires() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_, ca) = mk_cluster_ca();
        let issued = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/v1/addons/{kind}/certificate",
            axum::routing::post({
                let issued = issued.clone();
                move |headers: HeaderMap, Json(request): Json<CertificateRequest>| async move {
                    if bearer(&headers) != Some("t0ken") {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    issued.fetch_add(1, Ordering::SeqCst);
                    let id = "spiffe://trellis.local/ns/gloo-mesh/sa/ext-auth-service";
                    let chain = sign(&ca, &request.csr, id, Duration::from_secs(20), SystemTime::now()).unwrap();
                    Json(json!({"spiffeId": id, "certChain": chain, "clientCa": first_certificate(&ca.cert_pem)}))
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tls = crate::addon_client::AddonTls::default();
        let mut changes = tls.subscribe();
        let task = tokio::spawn(crate::addon_client::keep_identity(
            crate::agent_endpoint::AgentEndpoint::local(&agent),
            AddonKind::ExtAuth,
            crate::addon_client::AgentCredential::with_token("t0ken"),
            tls,
        ));
        for step in ["the first certificate", "a renewed certificate"] {
            tokio::time::timeout(Duration::from_secs(15), changes.changed())
                .await
                .unwrap_or_else(|_| panic!("{step} within 15 s"))
                .unwrap();
            assert!(changes.borrow().is_some(), "{step}");
        }
        task.abort();
        assert!(issued.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn refuses_a_csr_that_is_not_one() {
        let (_, ca) = mk_cluster_ca();
        let error = sign(
            &ca,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "spiffe://trellis.local/ns/a/sa/b",
            ADDON_CERT_TTL,
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("not a valid PEM certificate signing request"),
            "{error:#}"
        );
    }
}
