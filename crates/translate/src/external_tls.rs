//! ExternalService `clientsideTls`: how a proxy originates TLS to a destination outside the mesh,
//! and what the server must prove. Secure by default, as Istio's `ClientTLSSettings` (which
//! Gloo's field is) with `VERIFY_CERTIFICATE_AT_CLIENT`: the server's certificate must chain to
//! `caCertificates`, the `ca.crt` of `credentialName`, or else the proxy host's system store, and
//! carry one of `subjectAltNames` (the port's or the service's), or else the SNI. Only
//! `insecureSkipVerify: true` turns the check off.

use trellis_api::ClientsideTls;
use trellis_model::Snapshot;
use trellis_model::ir::{ClientCredential, ServerCheck, TrustSource};

use crate::ingress::{secret_credential, secret_pem};

/// TLS a proxy originates to one port of an ExternalService.
pub(crate) struct Originated {
    pub sni: String,
    pub verify: Option<ServerCheck>,
    pub client: Option<ClientCredential>,
}

/// What `tls` asks for `host` (plaintext: `None`), or why it cannot be done (a problem naming
/// the field under `clientsideTls`); the port then carries no traffic rather than less security.
pub(crate) fn originated(
    snapshot: &Snapshot,
    namespace: &str,
    host: &str,
    service_sans: &[String],
    tls: Option<&ClientsideTls>,
) -> Result<Option<Originated>, String> {
    let Some(tls) = tls.filter(|t| t.mode != "DISABLE") else {
        return Ok(None);
    };
    let sni = if tls.sni.is_empty() {
        host.to_string()
    } else {
        tls.sni.clone()
    };
    let credential = (!tls.credential_name.is_empty()).then_some(tls.credential_name.as_str());
    let verify = if tls.insecure_skip_verify == Some(true) {
        None
    } else {
        let trust = if !tls.ca_certificates.is_empty() {
            TrustSource::File(tls.ca_certificates.clone())
        } else if let Some(name) = credential {
            let pick = secret_pem(snapshot, namespace, name).map_err(|p| format!("credentialName: {p}"))?;
            match pick(["ca.crt", "cacert"]) {
                Some(ca) => TrustSource::Pem(ca),
                None => TrustSource::System,
            }
        } else {
            TrustSource::System
        };
        let sans = if tls.subject_alt_names.is_empty() {
            service_sans.to_vec()
        } else {
            tls.subject_alt_names.clone()
        };
        Some(ServerCheck {
            trust,
            subject_alt_names: sans,
        })
    };
    let client = match (tls.mode.as_str(), credential) {
        ("MUTUAL", _) if !tls.client_certificate.is_empty() => Some(ClientCredential::Files {
            cert: tls.client_certificate.clone(),
            key: tls.private_key.clone(),
        }),
        ("MUTUAL", Some(name)) => Some(ClientCredential::Secret(
            secret_credential(snapshot, namespace, name, false).map_err(|p| format!("credentialName: {p}"))?,
        )),
        ("MUTUAL", None) => return Err("mode: MUTUAL needs a client certificate".to_string()),
        _ => None,
    };
    Ok(Some(Originated { sni, verify, client }))
}

#[cfg(test)]
mod tests;
