//! Certificate authorities: generating roots and intermediates, signing CSRs, issuing leaves.
//!
//! Every chain this module returns is ordered leaf first, each certificate followed by its issuer. Chains meant
//! for the wire (server, client and workload certificates) leave out self-issued roots: peers hold those as
//! trust anchors. Chains that describe a CA ([`Authority::chain_pem`], [`Authority::sign_intermediate_csr`])
//! keep the root so that [`Authority::root_pem`] can find it.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, DnsName};

use crate::cert::{certs_or_empty, ders_to_pem, describe, is_self_issued, parse_error, parse_x509, pem_to_der_certs};
use crate::util::{der_to_pem, random_bytes, saturating_sub};
use crate::{PkiError, Result};

/// ECDSA P-256 everywhere: small and fast to sign and verify.
const KEY_ALG: &rcgen::SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

/// Certificates start this long before `now` so that peers with slightly slow clocks accept them.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// 9999-12-31T23:59:59Z, the last instant X.509 (GeneralizedTime) can express.
const MAX_X509_SECS: u64 = 253_402_300_799;

/// A private key, PKCS#8 PEM. Its `Debug` output is redacted so that keys never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(pub String);

/// A certificate chain and the private key of its first certificate.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    /// Leaf first, then the intermediates; never the self-issued root.
    pub cert_pem: String,
    pub key: KeyPem,
}

/// A CA that can sign: its certificate, its key, and the chain above it.
#[derive(Clone, Debug)]
pub struct Authority {
    /// This CA's certificate (one PEM block).
    pub cert_pem: String,
    pub key: KeyPem,
    /// The certificates above `cert_pem`, issuer first, up to and including the root. Empty for a root.
    pub chain_pem: String,
}

/// A validated [`Authority`], ready to sign.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_after: SystemTime,
    /// `None` when unconstrained.
    path_len: Option<u32>,
    /// This CA's certificate, then the chain above it.
    ders: Vec<Vec<u8>>,
    /// URI hosts its name constraints permit; `None`: unconstrained.
    permitted_uri_hosts: Option<Vec<String>>,
}

// === impl KeyPem ===

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

// === impl Authority ===

impl Authority {
    /// A new self-signed root CA.
    pub fn generate_root(common_name: &str, ttl: Duration, now: SystemTime) -> Result<Authority> {
        let key = generate_key()?;
        let not_after = checked_not_after(now, ttl, None)?;
        let mut params = base_params(Some(common_name), now, not_after)?;
        // Room for one intermediate below the root: root -> intermediate -> leaf.
        ca_extensions(&mut params, BasicConstraints::Constrained(1));
        // A root has no authority above it to identify.
        params.use_authority_key_identifier_extension = false;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_error("self-sign the root CA certificate"))?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key: KeyPem(key.serialize_pem()),
            chain_pem: String::new(),
        })
    }

    /// A new intermediate CA (CA:TRUE, path length 0) whose key is generated here and signed by `self`.
    pub fn generate_intermediate(&self, common_name: &str, ttl: Duration, now: SystemTime) -> Result<Authority> {
        let signer = self.signer()?;
        signer.check_can_sign_ca()?;
        let key = generate_key()?;
        let params = intermediate_params(common_name, ttl, now, &signer)?;
        let cert = params
            .signed_by(&key, &signer.issuer)
            .map_err(rcgen_error("sign the intermediate CA certificate"))?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key: KeyPem(key.serialize_pem()),
            chain_pem: ders_to_pem(&signer.ders),
        })
    }

    /// An operator-supplied CA. `cert_pem` may carry the chain after the CA certificate; those certificates are
    /// moved in front of `chain_pem`. Checks that the certificate is a CA allowed to sign, that `key_pem` is its
    /// key, and that each certificate of the chain is issued by the next.
    pub fn from_pem(cert_pem: &str, key_pem: &str, chain_pem: &str) -> Result<Authority> {
        let mut ders = pem_to_der_certs(cert_pem)?;
        ders.extend(certs_or_empty(chain_pem, "CA chain")?);
        let authority = Authority {
            cert_pem: der_to_pem(&ders[0]),
            key: KeyPem(key_pem.to_string()),
            chain_pem: ders_to_pem(&ders[1..]),
        };
        authority.signer()?;
        Ok(authority)
    }

    /// A TLS server certificate (serverAuth) for `dns_names`; entries that parse as IP addresses become IP SANs.
    /// The chain is the leaf and every intermediate, without the root.
    pub fn issue_server_cert(&self, dns_names: &[String], ttl: Duration, now: SystemTime) -> Result<CertifiedKey> {
        let Some(first) = dns_names.first() else {
            return Err(PkiError::InvalidName {
                field: "server certificate names",
                value: String::new(),
                reason: "at least one DNS name or IP address is required",
            });
        };
        let signer = self.signer()?;
        let key = generate_key()?;
        let not_after = checked_not_after(now, ttl, Some(signer.not_after))?;
        let mut params = base_params(Some(first), now, not_after)?;
        params.subject_alt_names = dns_names.iter().map(|n| host_san(n)).collect::<Result<_>>()?;
        leaf_extensions(&mut params, &[ExtendedKeyUsagePurpose::ServerAuth]);
        let cert = params
            .signed_by(&key, &signer.issuer)
            .map_err(rcgen_error("sign the server certificate"))?;
        Ok(CertifiedKey {
            cert_pem: signer.wire_chain(cert.der()),
            key: KeyPem(key.serialize_pem()),
        })
    }

    /// Signs a client certificate (clientAuth) for the key in `csr_pem`. The certificate names exactly
    /// `identity` (URI SAN) and `dns_name` (DNS SAN and CN): whatever subject or SANs the CSR asks for are
    /// ignored, because the caller, not the requester, decides the identity. Returns the chain without the root.
    pub fn sign_client_csr(
        &self,
        csr_pem: &str,
        identity: &str,
        dns_name: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)?;
        let signer = self.signer()?;
        let not_after = checked_not_after(now, ttl, Some(signer.not_after))?;
        let mut params = base_params(Some(dns_name), now, not_after)?;
        params.subject_alt_names = vec![uri_san("client identity", identity)?, dns_san(dns_name)?];
        leaf_extensions(&mut params, &[ExtendedKeyUsagePurpose::ClientAuth]);
        let cert = params
            .signed_by(&csr.public_key, &signer.issuer)
            .map_err(rcgen_error("sign the client certificate"))?;
        Ok(signer.wire_chain(cert.der()))
    }

    /// Signs a cluster intermediate CA (CA:TRUE, path length 0, keyCertSign) for the key in `csr_pem`, named
    /// `common_name` whatever the CSR asks for, and name-constrained to SPIFFE IDs of `trust_domain` (no DNS
    /// names, no IP addresses: see [`crate::constraints`]). Returns the intermediate followed by `self` and its
    /// chain, root included: the input [`intermediate_from_signed`] expects.
    pub fn sign_intermediate_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        trust_domain: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)?;
        let signer = self.signer()?;
        signer.check_can_sign_ca()?;
        let mut params = intermediate_params(common_name, ttl, now, &signer)?;
        params
            .custom_extensions
            .push(crate::constraints::cluster_intermediate_constraints(trust_domain)?);
        let cert = params
            .signed_by(&csr.public_key, &signer.issuer)
            .map_err(rcgen_error("sign the intermediate CA certificate"))?;
        let mut pem = der_to_pem(cert.der());
        pem.push_str(&ders_to_pem(&signer.ders));
        Ok(pem)
    }

    /// A workload certificate for `spiffe_id` (URI SAN, empty subject, serverAuth + clientAuth) with a key
    /// generated here. The chain is the leaf, `self` and the intermediates above it, without the root.
    ///
    /// A CA whose name constraints do not permit the ID's trust domain refuses here, with the reason, rather than
    /// issue a certificate every peer would reject.
    pub fn issue_workload_cert(&self, spiffe_id: &str, ttl: Duration, now: SystemTime) -> Result<CertifiedKey> {
        let (san, trust_domain) = spiffe_san(spiffe_id)?;
        let signer = self.signer()?;
        if let Some(hosts) = &signer.permitted_uri_hosts
            && !hosts
                .iter()
                .any(|h| crate::constraints::uri_host_permitted(trust_domain, h))
        {
            return Err(PkiError::OutsideNameConstraints {
                name: spiffe_id.to_string(),
                permitted: hosts.join(", "),
            });
        }
        let key = generate_key()?;
        let not_after = checked_not_after(now, ttl, Some(signer.not_after))?;
        let mut params = base_params(None, now, not_after)?;
        params.subject_alt_names = vec![san];
        leaf_extensions(
            &mut params,
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        let cert = params
            .signed_by(&key, &signer.issuer)
            .map_err(rcgen_error("sign the workload certificate"))?;
        Ok(CertifiedKey {
            cert_pem: signer.wire_chain(cert.der()),
            key: KeyPem(key.serialize_pem()),
        })
    }

    /// The root at the top of this authority's chain: the last certificate of `chain_pem`, or `cert_pem` when
    /// the chain is empty (or unreadable, which [`Authority::from_pem`] rules out).
    pub fn root_pem(&self) -> String {
        match certs_or_empty(&self.chain_pem, "CA chain") {
            Ok(chain) if !chain.is_empty() => der_to_pem(&chain[chain.len() - 1]),
            _ => match pem_to_der_certs(&self.cert_pem) {
                Ok(certs) => der_to_pem(&certs[0]),
                Err(_) => self.cert_pem.clone(),
            },
        }
    }

    /// Parses and checks this authority. Done on every signing call because the fields are public and are
    /// usually loaded from storage.
    fn signer(&self) -> Result<Signer> {
        let mut ders = pem_to_der_certs(&self.cert_pem)?;
        ders.truncate(1);
        ders.extend(certs_or_empty(&self.chain_pem, "CA chain")?);

        let x509 = parse_x509(&ders[0], "CA certificate")?;
        let subject = describe(&x509);
        let constraints = x509
            .basic_constraints()
            .map_err(|e| parse_error("CA certificate", e))?
            .map(|ext| ext.value.clone());
        let path_len = match constraints {
            Some(bc) if bc.ca => bc.path_len_constraint,
            _ => return Err(PkiError::NotCa { subject }),
        };
        let key_usage = x509.key_usage().map_err(|e| parse_error("CA certificate", e))?;
        if key_usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(PkiError::NoKeyCertSign { subject });
        }

        let key = parse_key(&self.key.0, "CA private key")?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch { subject });
        }

        for pair in ders.windows(2) {
            let (child, parent) = (parse_x509(&pair[0], "CA chain")?, parse_x509(&pair[1], "CA chain")?);
            if child.issuer().as_raw() != parent.subject().as_raw() {
                return Err(PkiError::BrokenChain {
                    subject: describe(&child),
                    next: describe(&parent),
                });
            }
        }

        let permitted_uri_hosts = crate::constraints::permitted_uri_hosts(&x509)?;
        let not_after = x509.validity().not_after.timestamp();
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ders[0].as_slice()), key)
            .map_err(rcgen_error("read the CA certificate as an issuer"))?;
        Ok(Signer {
            issuer,
            subject,
            not_after,
            path_len,
            ders,
            permitted_uri_hosts,
        })
    }
}

/// A new ECDSA P-256 key and a CSR for it with subject CN `common_name`. The key stays with the caller; only
/// the CSR travels.
pub fn new_key_and_csr(common_name: &str) -> Result<(KeyPem, String)> {
    let key = generate_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(Some(common_name));
    let csr = params
        .serialize_request(&key)
        .map_err(rcgen_error("create the certificate signing request"))?;
    let pem = csr
        .pem()
        .map_err(rcgen_error("encode the certificate signing request"))?;
    Ok((KeyPem(key.serialize_pem()), pem))
}

/// The agent's side of [`Authority::sign_intermediate_csr`]: its own key plus the chain the management server
/// returned (first certificate = the intermediate, the rest = the chain above it). Rejects a key that does not
/// match the intermediate.
pub fn intermediate_from_signed(key: KeyPem, chain_pem: &str) -> Result<Authority> {
    Authority::from_pem(chain_pem, &key.0, "")
}

// === impl Signer ===

impl Signer {
    fn check_can_sign_ca(&self) -> Result<()> {
        if self.path_len == Some(0) {
            return Err(PkiError::PathLenExhausted {
                subject: self.subject.clone(),
            });
        }
        Ok(())
    }

    /// `leaf`, then this CA and the chain above it, leaving out self-issued roots.
    fn wire_chain(&self, leaf: &[u8]) -> String {
        let mut pem = der_to_pem(leaf);
        for der in &self.ders {
            let root = parse_x509(der, "CA chain").map(|x| is_self_issued(&x)).unwrap_or(false);
            if !root {
                pem.push_str(&der_to_pem(der));
            }
        }
        pem
    }
}

// === helpers ===

fn generate_key() -> Result<KeyPair> {
    KeyPair::generate_for(KEY_ALG).map_err(rcgen_error("generate an ECDSA P-256 key"))
}

fn parse_key(pem: &str, what: &'static str) -> Result<KeyPair> {
    if !pem.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(PkiError::NoKey { what });
    }
    KeyPair::from_pem(pem).map_err(|source| PkiError::Key { what, source })
}

fn rcgen_error(action: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { action, source }
}

/// `now + ttl`, capped at `cap` (the issuer's own expiry: a certificate never outlives its CA).
fn checked_not_after(now: SystemTime, ttl: Duration, cap: Option<SystemTime>) -> Result<SystemTime> {
    if ttl.is_zero() {
        return Err(PkiError::InvalidTtl { ttl });
    }
    let not_after = now.checked_add(ttl).ok_or(PkiError::TimeOutOfRange)?;
    Ok(match cap {
        Some(cap) => not_after.min(cap),
        None => not_after,
    })
}

/// Subject, validity and a random 16-byte serial.
fn base_params(common_name: Option<&str>, now: SystemTime, not_after: SystemTime) -> Result<CertificateParams> {
    let not_before = saturating_sub(now, CLOCK_SKEW);
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).ok();
    if secs(not_after).is_none_or(|s| s > MAX_X509_SECS) || not_after <= not_before {
        return Err(PkiError::TimeOutOfRange);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(SerialNumber::from_slice(&random_bytes::<16>()?));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn intermediate_params(
    common_name: &str,
    ttl: Duration,
    now: SystemTime,
    signer: &Signer,
) -> Result<CertificateParams> {
    let not_after = checked_not_after(now, ttl, Some(signer.not_after))?;
    let mut params = base_params(Some(common_name), now, not_after)?;
    ca_extensions(&mut params, BasicConstraints::Constrained(0));
    Ok(params)
}

fn ca_extensions(params: &mut CertificateParams, constraints: BasicConstraints) {
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
}

fn leaf_extensions(params: &mut CertificateParams, ekus: &[ExtendedKeyUsagePurpose]) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus.to_vec();
}

/// rcgen's default subject is "CN=rcgen self signed cert"; always replace it.
fn distinguished_name(common_name: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = common_name {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

fn host_san(name: &str) -> Result<SanType> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => dns_san(name),
    }
}

fn dns_san(name: &str) -> Result<SanType> {
    let invalid = |reason| PkiError::InvalidName {
        field: "DNS name",
        value: name.to_string(),
        reason,
    };
    DnsName::try_from(name).map_err(|_| invalid("not a valid DNS name (letters, digits, '-' and '.')"))?;
    Ok(SanType::DnsName(name.try_into().map_err(|_| invalid("not ASCII"))?))
}

fn uri_san(field: &'static str, uri: &str) -> Result<SanType> {
    let invalid = |reason| PkiError::InvalidName {
        field,
        value: uri.to_string(),
        reason,
    };
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(invalid("not a URI (hint: e.g. spiffe://trellis-relay/cluster/NAME)"));
    };
    if scheme.is_empty() || rest.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("not a URI (hint: e.g. spiffe://trellis-relay/cluster/NAME)"));
    }
    Ok(SanType::URI(uri.try_into().map_err(|_| invalid("not ASCII"))?))
}

/// The SAN of a SPIFFE ID and its trust domain.
fn spiffe_san(spiffe_id: &str) -> Result<(SanType, &str)> {
    let trust_domain = spiffe_id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    if trust_domain.is_empty() {
        return Err(PkiError::InvalidName {
            field: "SPIFFE ID",
            value: spiffe_id.to_string(),
            reason: "must look like spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>",
        });
    }
    Ok((uri_san("SPIFFE ID", spiffe_id)?, trust_domain))
}
