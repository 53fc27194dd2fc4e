//! The crate's one error type.

/// Everything that can go wrong while generating, signing, parsing or configuring TLS.
///
/// Messages are lowercase, name what is wrong and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what}: no PEM certificate found (hint: expected a '-----BEGIN CERTIFICATE-----' block)")]
    NoCertificate { what: &'static str },

    #[error("{what}: malformed PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{what}: no PKCS#8 private key found (hint: expected a '-----BEGIN PRIVATE KEY-----' block; \
         convert with `openssl pkcs8 -topk8 -nocrypt`)"
    )]
    NoKey { what: &'static str },

    #[error("{what}: unusable private key (hint: ECDSA P-256/P-384, Ed25519 or RSA in PKCS#8 are supported)")]
    Key {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("{what}: not a valid X.509 certificate: {reason}")]
    Parse { what: &'static str, reason: String },

    #[error("certificate {subject:?} is not a CA (hint: a signing certificate needs basicConstraints CA:TRUE)")]
    NotCa { subject: String },

    #[error("CA certificate {subject:?} may not sign certificates (hint: its keyUsage must include keyCertSign)")]
    NoKeyCertSign { subject: String },

    #[error(
        "CA {subject:?} has path length 0 and cannot sign intermediate CAs (hint: sign intermediates with the root)"
    )]
    PathLenExhausted { subject: String },

    #[error(
        "private key does not match certificate {subject:?} (hint: pass the key whose CSR or generation produced \
         this certificate)"
    )]
    KeyMismatch { subject: String },

    #[error(
        "certificate {subject:?} is not issued by the next certificate in the chain {next:?} (hint: order the chain \
         leaf first, each certificate followed by its issuer)"
    )]
    BrokenChain { subject: String, next: String },

    #[error("invalid certificate signing request (hint: send a PKCS#10 CSR signed by the key it names)")]
    Csr(#[source] rcgen::Error),

    #[error("invalid {field} {value:?}: {reason}")]
    InvalidName {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error(
        "{name:?} is outside this CA's name constraints (it may sign SPIFFE IDs of {permitted} only; hint: the \
         trust domain of the workload must be the mesh's --trust-domain)"
    )]
    OutsideNameConstraints { name: String, permitted: String },

    #[error("invalid ttl {ttl:?}: must be greater than zero")]
    InvalidTtl { ttl: std::time::Duration },

    #[error("validity period does not fit in an X.509 certificate (hint: check `now` and the ttl)")]
    TimeOutOfRange,

    #[error("failed to {action}")]
    Rcgen {
        action: &'static str,
        #[source]
        source: rcgen::Error,
    },

    #[error("failed to build the TLS config: {context}")]
    Tls {
        context: &'static str,
        #[source]
        source: rustls::Error,
    },

    #[error("failed to build the client certificate verifier (hint: check the client roots bundle)")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),

    #[error("the system random number generator failed")]
    Random,
}

/// Result with [`PkiError`].
pub type Result<T, E = PkiError> = std::result::Result<T, E>;
