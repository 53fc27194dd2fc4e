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

fn human(seconds: u64) -> String {
    match seconds {
        s if s >= 2 * 86400 => format!("{} days", s / 86400),
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}m {}s", s / 60, s % 60),
    }
}

/// A finding about a certificate valid from `not_before` to `not_after` (Unix seconds). One that
/// Trellis renews itself is a warning once it is late for renewal (under a quarter of its life
/// left; renewal happens at two thirds); any other once it has under a week left.
pub fn expiry(check: &str, what: &str, (not_before, not_after): (u64, u64), now: u64, renewed: bool) -> Finding {
    if not_after <= now {
        return finding("error", check, format!("{what} expired {} ago", human(now - not_after)));
    }
    let left = not_after - now;
    let threshold = if renewed {
        not_after.saturating_sub(not_before) / 4
    } else {
        EXPIRY_WARNING.as_secs()
    };
    if left < threshold {
        let why = if renewed { " and was not renewed in time" } else { "" };
        finding("warning", check, format!("{what} expires in {}{why}", human(left)))
    } else {
        finding("ok", check, format!("{what} valid for {}", human(left)))
    }
}

fn cert_expiry(check: &str, what: &str, pem: &str, now: u64) -> Finding {
    match trellis_pki::inspect_pem(pem) {
        Ok(info) => expiry(check, what, (unix(info.not_before), unix(info.not_after)), now, false),
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
        let validity = |key: &str| -> Option<(u64, u64)> { serde_json::from_value(status[key].clone()).ok() };
        if let Some(validity) = validity("clientCertValidity") {
            findings.push(expiry(
                &check,
                &format!("the relay client certificate of {cluster}"),
                validity,
                now,
                true,
            ));
        }
        if let Some(validity) = validity("intermediateValidity") {
            findings.push(expiry(
                &check,
                &format!("the mesh intermediate CA of {cluster}"),
                validity,
                now,
                true,
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
        // (validity, now, renewed by Trellis, severity)
        let cases = [
            ((0, 100), 100, false, "error"),
            ((0, 100 + 6 * day), 100, false, "warning"),
            ((0, 100 + 8 * day), 100, false, "ok"),
            // A 24 h certificate renewed at 16 h: fine at 20 h left, late at 5 h left.
            ((0, day), day - 20 * 3600, true, "ok"),
            ((0, day), day - 5 * 3600, true, "warning"),
        ];
        for (validity, now, renewed, severity) in cases {
            assert_eq!(
                expiry("c", "cert", validity, now, renewed).severity,
                severity,
                "{validity:?} at {now}"
            );
        }
        assert!(
            expiry("c", "cert", (0, 40), 100, false)
                .message
                .contains("expired 1m 0s ago")
        );
    }
}
