//! X.509 name constraints for cluster intermediates: what a cluster's CA may sign.
//!
//! A cluster intermediate's key lives on the agent's host. Whoever holds it can sign anything the
//! verifiers of the mesh accept below the mesh root, so the intermediate says what that is:
//!
//! ```text
//!  permitted  URI   <trust-domain>        spiffe://<trust-domain>/... only
//!  excluded   DNS   "" (every name)       no TLS server certificates for host names
//!  excluded   IP    0.0.0.0/0, ::/0       nor for addresses
//! ```
//!
//! RFC 5280 (4.2.1.10) matches a URI constraint against the URI's *host* only: the path of a
//! SPIFFE ID (`/ns/<ns>/sa/<sa>`) cannot be constrained in X.509. Which namespaces and service
//! accounts a cluster may issue for is enforced above the certificate: by the agent's issuer and
//! by the management server, which signs one live intermediate per cluster.
//!
//! rcgen 0.14's `GeneralSubtree` has no URI form, so the extension is encoded here (DER, a few
//! dozen bytes) and attached as a critical custom extension, as RFC 5280 requires.
//!
//! Who enforces it: BoringSSL (Envoy, which verifies every workload certificate in the mesh) and
//! OpenSSL implement URI, DNS and IP constraints. rustls-webpki 0.103 implements DNS and IP but
//! fails closed on URI constraints (every URI SAN below such a CA is refused), so mesh
//! certificates must not be verified with webpki; relay certificates (a different, unconstrained
//! CA) are.

use rcgen::CustomExtension;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{PkiError, Result};

/// id-ce-nameConstraints.
const NAME_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 30];

// Context-specific tags of GeneralName (RFC 5280 4.2.1.6), IMPLICIT.
const TAG_DNS: u8 = 0x82;
const TAG_URI: u8 = 0x86;
const TAG_IP: u8 = 0x87;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_PERMITTED: u8 = 0xa0;
const TAG_EXCLUDED: u8 = 0xa1;

/// Checks a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'; SPIFFE ID spec 2.1).
/// A leading dot is refused: in a URI constraint it would mean "any subdomain", not this domain.
pub fn check_trust_domain(trust_domain: &str) -> Result<()> {
    let valid = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && !trust_domain.starts_with('.')
        && !trust_domain.ends_with('.')
        && trust_domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            field: "trust domain",
            value: trust_domain.to_string(),
            reason: "must be lowercase letters, digits, '.', '-' and '_', e.g. trellis.local",
        })
    }
}

/// The critical nameConstraints extension of a cluster intermediate for `trust_domain`.
pub(crate) fn cluster_intermediate_constraints(trust_domain: &str) -> Result<CustomExtension> {
    check_trust_domain(trust_domain)?;
    let permitted = der(
        TAG_PERMITTED,
        &der(TAG_SEQUENCE, &der(TAG_URI, trust_domain.as_bytes())),
    );
    let mut excluded = Vec::new();
    // An empty dNSName constraint matches every DNS name (RFC 5280: "any name").
    excluded.extend(der(TAG_SEQUENCE, &der(TAG_DNS, b"")));
    // Address and mask, all zero: every IPv4, then every IPv6 address.
    excluded.extend(der(TAG_SEQUENCE, &der(TAG_IP, &[0; 8])));
    excluded.extend(der(TAG_SEQUENCE, &der(TAG_IP, &[0; 32])));
    let mut body = permitted;
    body.extend(der(TAG_EXCLUDED, &excluded));
    let mut extension = CustomExtension::from_oid_content(NAME_CONSTRAINTS_OID, der(TAG_SEQUENCE, &body));
    extension.set_criticality(true);
    Ok(extension)
}

/// The URI hosts a CA certificate's name constraints permit; `None` when it has no URI
/// constraint (it may then sign any URI).
pub(crate) fn permitted_uri_hosts(x509: &X509Certificate<'_>) -> Result<Option<Vec<String>>> {
    let constraints = x509
        .name_constraints()
        .map_err(|e| crate::cert::parse_error("CA certificate name constraints", e))?;
    let Some(constraints) = constraints else {
        return Ok(None);
    };
    let hosts: Vec<String> = constraints
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .filter_map(|subtree| match &subtree.base {
            GeneralName::URI(host) => Some((*host).to_string()),
            _ => None,
        })
        .collect();
    Ok((!hosts.is_empty()).then_some(hosts))
}

/// Whether `host` falls under the URI constraint `constraint` (RFC 5280: a leading '.' means
/// any subdomain; otherwise the host must equal it, case-insensitively).
pub(crate) fn uri_host_permitted(host: &str, constraint: &str) -> bool {
    match constraint.strip_prefix('.') {
        Some(parent) => {
            host.len() > parent.len() + 1 && host.to_ascii_lowercase().ends_with(&constraint.to_ascii_lowercase())
        }
        None => host.eq_ignore_ascii_case(constraint),
    }
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_the_long_form_from_128_bytes() {
        assert_eq!(der(0x04, b"ab"), vec![0x04, 2, b'a', b'b']);
        assert_eq!(&der(0x04, &[0; 200])[..3], &[0x04, 0x81, 200]);
        assert_eq!(&der(0x04, &[0; 300])[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn trust_domains_are_checked() {
        for good in ["trellis.local", "cluster.local", "a_b-c.example"] {
            check_trust_domain(good).unwrap();
        }
        for bad in ["", ".trellis.local", "Trellis.local", "a/b", "x.", "spiffe://x"] {
            assert!(check_trust_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uri_host_matching_follows_rfc_5280() {
        assert!(uri_host_permitted("trellis.local", "trellis.local"));
        assert!(uri_host_permitted("TRELLIS.local", "trellis.local"));
        assert!(!uri_host_permitted("evil.trellis.local", "trellis.local"));
        assert!(!uri_host_permitted("trellis.local.evil", "trellis.local"));
        assert!(uri_host_permitted("a.trellis.local", ".trellis.local"));
        assert!(!uri_host_permitted("trellis.local", ".trellis.local"));
    }
}
