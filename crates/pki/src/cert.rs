//! Reading certificates: PEM bundles, what a certificate says about itself, and SPIFFE identities.

use std::time::{Duration, SystemTime};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::util::der_to_pem;
use crate::{PkiError, Result};

const RELAY_IDENTITY_PREFIX: &str = "spiffe://trellis-relay/cluster/";

/// What a certificate says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// URI SANs, e.g. SPIFFE IDs.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Lowercase hex without leading zeros.
    pub serial_hex: String,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    pub subject_cn: Option<String>,
    /// Subject O entries (the groups of a management API client certificate).
    pub subject_orgs: Vec<String>,
}

/// Inspect one DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo> {
    let x509 = parse_x509(der, "certificate")?;
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    let san = x509
        .subject_alternative_name()
        .map_err(|e| parse_error("certificate", e))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::URI(uri) => uris.push((*uri).to_string()),
            GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
            _ => {}
        }
    }
    let validity = x509.validity();
    Ok(CertInfo {
        uris,
        dns_names,
        not_before: asn1_to_system_time(validity.not_before.timestamp()),
        not_after: asn1_to_system_time(validity.not_after.timestamp()),
        serial_hex: x509.tbs_certificate.serial.to_str_radix(16),
        is_ca: x509.is_ca(),
        subject_cn: subject_cn(&x509),
        subject_orgs: x509
            .subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect(),
    })
}

/// Inspect the first certificate of a PEM bundle.
pub fn inspect_pem(pem: &str) -> Result<CertInfo> {
    let certs = pem_to_der_certs(pem)?;
    inspect_der(&certs[0])
}

/// Lowercase hex SHA-256 of the first certificate's subject public key (its SubjectPublicKeyInfo):
/// whether two certificates certify the same key.
pub fn public_key_sha256(pem: &str) -> Result<String> {
    let certs = pem_to_der_certs(pem)?;
    let x509 = parse_x509(&certs[0], "certificate")?;
    Ok(trellis_base::sha256_hex(x509.public_key().raw))
}

/// Lowercase hex SHA-256 of the first certificate's DER: which certificate, exactly (a root
/// re-issued for the same key is another root).
pub fn cert_sha256(pem: &str) -> Result<String> {
    Ok(trellis_base::sha256_hex(&pem_to_der_certs(pem)?[0]))
}

/// Every `CERTIFICATE` block of a PEM bundle as DER, in order. Fails when there is none.
pub fn pem_to_der_certs(pem: &str) -> Result<Vec<Vec<u8>>> {
    let certs = certs_or_empty(pem, "certificate bundle")?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            what: "certificate bundle",
        });
    }
    Ok(certs)
}

/// The SPIFFE ID an agent presents to the management server's relay.
pub fn relay_identity(cluster: &str) -> String {
    format!("{RELAY_IDENTITY_PREFIX}{cluster}")
}

/// The cluster named by a [`relay_identity`], or `None` for any other URI.
pub fn cluster_from_relay_identity(uri: &str) -> Option<String> {
    let cluster = uri.strip_prefix(RELAY_IDENTITY_PREFIX)?;
    (!cluster.is_empty() && !cluster.contains('/')).then(|| cluster.to_string())
}

// === crate helpers ===

pub(crate) fn certs_or_empty(pem: &str, what: &'static str) -> Result<Vec<Vec<u8>>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .map(|cert| {
            cert.map(|der| der.to_vec())
                .map_err(|source| PkiError::Pem { what, source })
        })
        .collect()
}

pub(crate) fn ders_to_pem<'a>(ders: impl IntoIterator<Item = &'a Vec<u8>>) -> String {
    ders.into_iter().map(|der| der_to_pem(der)).collect()
}

pub(crate) fn parse_x509<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| parse_error(what, e))?;
    Ok(x509)
}

pub(crate) fn parse_error(what: &'static str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Parse {
        what,
        reason: e.to_string(),
    }
}

pub(crate) fn subject_cn(x509: &X509Certificate<'_>) -> Option<String> {
    x509.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// A human name for error messages: the CN, else the whole subject.
pub(crate) fn describe(x509: &X509Certificate<'_>) -> String {
    subject_cn(x509).unwrap_or_else(|| x509.subject().to_string())
}

/// Self-issued: subject equals issuer. Such a certificate is a trust anchor and never goes on the wire.
pub(crate) fn is_self_issued(x509: &X509Certificate<'_>) -> bool {
    x509.subject().as_raw() == x509.issuer().as_raw()
}

fn asn1_to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}
