//! `GET /api/v1/check`: what `trellis check` reports. Every finding says what is wrong and the
//! fix; the CLI exits non-zero when any finding is an error, so scripts can trust it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::json;

use super::Mgmt;
use super::pki::RelaySecurity;

/// Certificates closer than this to expiry are a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86400);

#[derive(Debug, Serialize)]
pub struct Finding {
    /// `ok`, `warning` or `error`.
    pub severity: &'static str,
    pub check: String,
    pub message: String,
}

fn finding(severity: &'static str, check: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        severity,
        check: check.into(),
        message: message.into(),
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A finding about a certificate that expires at `not_after` (seconds since the epoch).
pub fn expiry(check: &str, what: &str, not_after: u64, now: u64) -> Finding {
    if not_after <= now {
        return finding("error", check, format!("{what} expired {}s ago", now - not_after));
    }
    let left = not_after - now;
    let days = left / 86400;
    if left < EXPIRY_WARNING.as_secs() {
        finding(
            "warning",
            check,
            format!("{what} expires in {days}d {}h", (left % 86400) / 3600),
        )
    } else {
        finding("ok", check, format!("{what} valid for {days} more days"))
    }
}

fn cert_expiry(check: &str, what: &str, pem: &str, now: u64) -> Finding {
    match trellis_pki::inspect_pem(pem) {
        Ok(info) => expiry(check, what, unix(info.not_after), now),
        Err(error) => finding("error", check, format!("{what} cannot be read: {error}")),
    }
}

pub fn findings(mgmt: &Mgmt, now: u64) -> Vec<Finding> {
    let mut findings = Vec::new();
    match &mgmt.relay {
        RelaySecurity::Insecure => findings.push(finding(
            "warning",
            "relay-security",
            "the relay runs --insecure: plaintext and unauthenticated; restart the management server and agents without --insecure",
        )),
        RelaySecurity::Tls(tls) => {
            let mode = if tls.signer.is_some() { "built-in CA, registration tokens" } else { "operator client certificates (--disable-ca)" };
            findings.push(finding("ok", "relay-security", format!("relay uses mutual TLS ({mode}), authority {}", tls.authority)));
            findings.push(cert_expiry("relay-server-certificate", "relay server certificate", &tls.server.cert_pem, now));
            if let Some(signer) = &tls.signer {
                findings.push(cert_expiry("relay-signing-ca", "relay signing CA", &signer.cert_pem, now));
            }
            findings.push(cert_expiry("relay-root-ca", "relay root CA", &tls.root_pem, now));
        }
    }
    findings.push(cert_expiry(
        "mesh-root-ca",
        "mesh root CA",
        &mgmt.mesh.root.root_pem(),
        now,
    ));
    for (cluster, status) in super::api::cluster_statuses(mgmt) {
        let check = format!("cluster/{cluster}");
        if status["connected"] != true {
            let hint = if status["registered"] == true {
                "start its agent"
            } else {
                "register it with `trellis cluster register`"
            };
            findings.push(finding(
                "error",
                &check,
                format!("the agent of {cluster} is not connected: {hint}"),
            ));
            continue;
        }
        if let Some(nack) = status["nack"].as_str() {
            findings.push(finding(
                "error",
                &check,
                format!("the agent of {cluster} rejected the last config: {nack}"),
            ));
        } else if status["ackedVersion"] != status["currentVersion"] {
            findings.push(finding(
                "warning",
                &check,
                format!("the agent of {cluster} does not run the current config yet"),
            ));
        } else {
            findings.push(finding(
                "ok",
                &check,
                format!("the agent of {cluster} is connected and runs the current config"),
            ));
        }
        if let Some(not_after) = status["clientCertExpires"].as_u64() {
            findings.push(expiry(
                &check,
                &format!("the relay client certificate of {cluster}"),
                not_after,
                now,
            ));
        }
        if let Some(not_after) = status["intermediateExpires"].as_u64() {
            findings.push(expiry(
                &check,
                &format!("the mesh intermediate CA of {cluster}"),
                not_after,
                now,
            ));
        }
    }
    findings
}

pub async fn report(State(mgmt): State<Arc<Mgmt>>) -> Json<serde_json::Value> {
    let findings = findings(&mgmt, unix(SystemTime::now()));
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    let warnings = findings.iter().filter(|f| f.severity == "warning").count();
    Json(json!({ "findings": findings, "errors": errors, "warnings": warnings }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_findings_by_time_left() {
        let day = 86400;
        let cases = [
            (0, "error"),
            (100, "error"),
            (101, "warning"),
            (100 + 6 * day, "warning"),
            (100 + 8 * day, "ok"),
        ];
        for (not_after, severity) in cases {
            assert_eq!(
                expiry("c", "cert", not_after, 100).severity,
                severity,
                "not_after {not_after}"
            );
        }
        assert!(expiry("c", "cert", 40, 100).message.contains("expired 60s ago"));
    }
}
