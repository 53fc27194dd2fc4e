//! Mesh mTLS: the two secrets every proxy holds (its SPIFFE certificate and the mesh root), and
//! the TLS contexts that refer to them by name over SDS on the ADS stream.
//!
//! ```text
//!  client sidecar ──UpstreamTlsContext(sni = upstream key, SAN ∈ upstream identities)──▶
//!      [remote east-west gateway: passes TLS through by SNI] ──▶
//!  server sidecar ──DownstreamTlsContext(client cert required, chained to ROOTCA)──▶ app
//! ```

use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use trellis_model::ir::{ClientCredential, IngressTls, ServerCheck, TlsCredential, TrustSource, Upstream};

use crate::common::ads_source;
use crate::routes::exact;

/// The proxy's own certificate chain and key (its SPIFFE identity).
pub const WORKLOAD_SECRET: &str = "default";
/// The mesh root CA every peer certificate must chain to.
pub const ROOT_CA_SECRET: &str = "ROOTCA";

const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// The two secrets a proxy needs, as PEM: [`WORKLOAD_SECRET`] then [`ROOT_CA_SECRET`].
pub fn secrets(cert_chain_pem: &str, key_pem: &str, root_ca_pem: &str) -> Vec<Secret> {
    vec![
        Secret {
            name: WORKLOAD_SECRET.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(cert_chain_pem)),
                private_key: Some(inline(key_pem)),
                ..Default::default()
            })),
        },
        Secret {
            name: ROOT_CA_SECRET.to_string(),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(root_ca_pem)),
                ..Default::default()
            })),
        },
    ]
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

/// What a sidecar presents to an upstream: the upstream's key as SNI (a remote gateway routes
/// on it), our certificate, and a peer check: chained to the mesh root and, unless the IR lists
/// none, presenting one of the upstream's identities as a URI SAN.
pub(crate) fn upstream_socket(upstream: &Upstream) -> TransportSocket {
    let sans = upstream
        .identities
        .iter()
        .map(|id| SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(exact(id)),
            ..Default::default()
        })
        .collect();
    let context = UpstreamTlsContext {
        sni: upstream.key.clone(),
        common_tls_context: Some(common_context(CertificateValidationContext {
            match_typed_subject_alt_names: sans,
            ..Default::default()
        })),
        ..Default::default()
    };
    tls_socket(pack_any(context))
}

/// What a proxy presents to an add-on (ext-auth, rate limiter): its workload certificate, and
/// a peer check: chained to the mesh root and carrying exactly the add-on's SPIFFE ID. ALPN
/// asks for HTTP/2, the add-ons' gRPC.
pub(crate) fn addon_socket(identity: &str) -> TransportSocket {
    let mut common = common_context(CertificateValidationContext {
        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(exact(identity)),
            ..Default::default()
        }],
        ..Default::default()
    });
    common.alpn_protocols = vec!["h2".to_string()];
    let context = UpstreamTlsContext {
        common_tls_context: Some(common),
        ..Default::default()
    };
    tls_socket(pack_any(context))
}

/// TLS to a destination outside the mesh (ExternalService `clientsideTls`), with `sni`. The
/// server's certificate must chain to the trusted CAs and carry one of the names (the SNI when
/// none are given), unless `insecureSkipVerify` left `verify` out; MUTUAL presents `client`.
pub(crate) fn originate_socket(
    sni: &str,
    verify: Option<&ServerCheck>,
    client: Option<&ClientCredential>,
) -> TransportSocket {
    let validation = verify.map(|check| {
        let names = if check.subject_alt_names.is_empty() {
            vec![sni.to_string()]
        } else {
            check.subject_alt_names.clone()
        };
        // A name may be a DNS name or a URI (SPIFFE), as Istio's `subjectAltNames` may.
        let sans = names
            .iter()
            .flat_map(|name| {
                [SanType::Dns, SanType::Uri].map(|san_type| SubjectAltNameMatcher {
                    san_type: san_type as i32,
                    matcher: Some(exact(name)),
                    ..Default::default()
                })
            })
            .collect();
        let mut context = CertificateValidationContext {
            match_typed_subject_alt_names: sans,
            ..Default::default()
        };
        match &check.trust {
            TrustSource::System => return system_trust(context),
            TrustSource::File(path) => context.trusted_ca = Some(file(path)),
            TrustSource::Pem(pem) => context.trusted_ca = Some(inline(pem)),
        }
        ValidationContextType::ValidationContext(context)
    });
    let mut common = CommonTlsContext {
        validation_context_type: validation,
        ..Default::default()
    };
    match client {
        Some(ClientCredential::Files { cert, key }) => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: Some(file(cert)),
                private_key: Some(file(key)),
                ..Default::default()
            }];
        }
        Some(ClientCredential::Secret(credential)) => {
            common.tls_certificate_sds_secret_configs = vec![sds(&ingress_cert_secret(&credential.secret))];
        }
        None => {}
    }
    let context = UpstreamTlsContext {
        sni: sni.to_string(),
        common_tls_context: Some(common),
        ..Default::default()
    };
    tls_socket(pack_any(context))
}

/// SDS name of the host's system CA bundle, which the proxy's agent serves when a cluster
/// trusts it (Envoy itself has no notion of a system store).
pub const SYSTEM_CA_SECRET: &str = "system-ca";

/// The host's CA bundle at `path` as the [`SYSTEM_CA_SECRET`] validation context: Envoy reads
/// the file (and watches it) itself.
pub fn system_ca_secret(path: &str) -> Secret {
    Secret {
        name: SYSTEM_CA_SECRET.to_string(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(file(path)),
            ..Default::default()
        })),
    }
}

/// `checks` (names to match) against the CAs of the host's system store, served over SDS. Without
/// that secret the cluster never warms: its requests fail rather than go unchecked.
pub(crate) fn system_trust(checks: CertificateValidationContext) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(checks),
        validation_context_sds_secret_config: Some(sds(SYSTEM_CA_SECRET)),
        ..Default::default()
    })
}

/// Whether some cluster of `ir` trusts the host's system store: an ExternalService checked
/// against it, or a JWKS fetched over HTTPS.
pub fn uses_system_ca(ir: &trellis_model::ClusterConfig) -> bool {
    let external = ir.upstreams.iter().any(|u| {
        u.external
            .as_ref()
            .and_then(|e| e.tls_verify.as_ref())
            .is_some_and(|check| check.trust == TrustSource::System)
    });
    let jwks = ir
        .virtual_hosts
        .iter()
        .flat_map(|h| &h.routes)
        .filter_map(|r| r.policies.jwt.as_deref())
        .flat_map(|jwt| &jwt.providers)
        .any(|p| p.remote.as_ref().is_some_and(|remote| remote.tls));
    external || jwks
}

/// What a sidecar's inbound listener demands: a client certificate that chains to the mesh
/// root, whatever identity it carries (authorization comes later, on that identity).
pub(crate) fn downstream_socket() -> TransportSocket {
    let context = DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(common_context(CertificateValidationContext::default())),
        ..Default::default()
    };
    tls_socket(pack_any(context))
}

/// What an ingress gateway listener terminates: its certificate and key from files on the
/// gateway's host, or from a Secret over SDS; with a client CA (MUTUAL), a client certificate
/// chained to it is required. HTTP listeners offer HTTP/2 before HTTP/1.1 over ALPN; the
/// connection manager speaks both.
pub(crate) fn ingress_socket(tls: &IngressTls, http: bool) -> TransportSocket {
    let alpn = if http {
        vec!["h2".to_string(), "http/1.1".to_string()]
    } else {
        Vec::new()
    };
    // verifySubjectAltName: any SAN type may carry the name, as in Gloo and Istio.
    let client_sans: Vec<SubjectAltNameMatcher> = tls
        .client_subject_alt_names
        .iter()
        .flat_map(|name| {
            [SanType::Dns, SanType::Uri, SanType::Email].map(|san_type| SubjectAltNameMatcher {
                san_type: san_type as i32,
                matcher: Some(exact(name)),
                ..Default::default()
            })
        })
        .collect();
    // ISTIO_MUTUAL: the gateway's mesh identity, and only mesh clients (chained to ROOTCA).
    if tls.mesh_mutual {
        let mut common = common_context(CertificateValidationContext {
            match_typed_subject_alt_names: client_sans,
            ..Default::default()
        });
        common.alpn_protocols = alpn;
        let context = DownstreamTlsContext {
            require_client_certificate: Some(BoolValue { value: true }),
            common_tls_context: Some(common),
            ..Default::default()
        };
        return tls_socket(pack_any(context));
    }
    let (certificates, sds_certificates, client_ca) = match &tls.credential {
        Some(credential) => (
            Vec::new(),
            vec![sds(&ingress_cert_secret(&credential.secret))],
            credential.client_ca_pem.as_ref().map(|_| {
                ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: client_sans.clone(),
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(&ingress_ca_secret(&credential.secret))),
                    ..Default::default()
                })
            }),
        ),
        None => (
            vec![TlsCertificate {
                certificate_chain: Some(file(&tls.cert_chain_file)),
                private_key: Some(file(&tls.private_key_file)),
                ..Default::default()
            }],
            Vec::new(),
            tls.client_ca_file.as_deref().map(|ca| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(file(ca)),
                    match_typed_subject_alt_names: client_sans.clone(),
                    ..Default::default()
                })
            }),
        ),
    };
    let context = DownstreamTlsContext {
        require_client_certificate: client_ca.is_some().then_some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: certificates,
            tls_certificate_sds_secret_configs: sds_certificates,
            validation_context_type: client_ca,
            alpn_protocols: alpn,
            ..Default::default()
        }),
        ..Default::default()
    };
    tls_socket(pack_any(context))
}

/// SDS name of the certificate and key of a listener's `secretName` (`namespace/name`).
pub(crate) fn ingress_cert_secret(secret: &str) -> String {
    format!("ingress-cert|{secret}")
}

/// SDS name of the client CA (`ca.crt`) of a MUTUAL listener's `secretName`.
pub(crate) fn ingress_ca_secret(secret: &str) -> String {
    format!("ingress-ca|{secret}")
}

/// The SDS secrets a listener's `secretName` becomes: its certificate and key, and its client
/// CA when MUTUAL. Served by the gateway's agent on the ADS stream, never written to disk.
pub(crate) fn ingress_secrets(credential: &TlsCredential) -> Vec<Secret> {
    let mut secrets = vec![Secret {
        name: ingress_cert_secret(&credential.secret),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&credential.cert_chain_pem)),
            private_key: Some(inline(&credential.private_key_pem)),
            ..Default::default()
        })),
    }];
    if let Some(ca) = &credential.client_ca_pem {
        secrets.push(Secret {
            name: ingress_ca_secret(&credential.secret),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(inline(ca)),
                ..Default::default()
            })),
        });
    }
    secrets
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    }
}

/// Our certificate and the mesh root, both by name over SDS, plus `extra` peer checks.
fn common_context(extra: CertificateValidationContext) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_SECRET)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(extra),
                validation_context_sds_secret_config: Some(sds(ROOT_CA_SECRET)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_source()),
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

#[cfg(test)]
mod tests;
