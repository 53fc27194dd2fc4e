//! Trellis PKI: the two certificate authorities of a Trellis mesh, as pure functions over PEM strings.
//!
//! ```text
//!  relay PKI (mgmt <-> agents)                 mesh PKI (proxy <-> proxy)
//!
//!  relay root CA            (mgmt)             mesh root CA                 (mgmt)
//!    └ relay intermediate   (mgmt)               └ cluster intermediate     (key: agent; CSR signed by mgmt;
//!        ├ mgmt server cert (DNS SAN)                │                       name constraints: URIs of the
//!        └ agent client certs (from CSRs,            │                       trust domain only, no DNS, no IP)
//!          URI SAN spiffe://trellis-relay/           └ workload certs        (agent, for its proxies)
//!          cluster/<name>)                               spiffe://<td>/ns/<ns>/sa/<sa>
//! ```
//!
//! Nothing here touches files: callers store the PEM strings (keys 0600). The clock is read only when a
//! caller does not pass `now`, so tests can issue certificates in the past. Every key is ECDSA P-256.

mod authority;
mod cert;
pub mod constraints;
mod error;
mod tls;
mod util;

pub use authority::{Authority, CertifiedKey, KeyPem, intermediate_from_signed, new_key_and_csr};
pub use cert::{
    CertInfo, cert_sha256, cluster_from_relay_identity, inspect_der, inspect_pem, pem_to_der_certs, public_key_sha256,
    relay_identity,
};
pub use constraints::check_trust_domain;
pub use error::{PkiError, Result};
pub use tls::{client_tls_config, root_store, server_tls_config};
pub use util::{der_to_pem, random_token, renew_at};

#[cfg(test)]
mod tests;
