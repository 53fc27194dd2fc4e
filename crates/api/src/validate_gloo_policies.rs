//! Semantic checks of the policy kinds Trellis applies among the newer Gloo kinds: CORSPolicy,
//! MirrorPolicy, JWTPolicy, LoadBalancerPolicy, ConnectionPolicy. Each problem is
//! `(field path, message)`.

use crate::envoy_limits::{check_duration, check_modifiable_header_name, check_no_control, check_regex};
use crate::resilience_policies::ConnectionPolicySpec;
use crate::security_policies::{CorsPolicySpec, JwtPolicySpec, StringMatch};
use crate::traffic_policies::{LoadBalancerPolicySpec, MirrorPolicySpec};

type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

fn check_percentage(problems: &mut Problems, field: &str, percentage: Option<f64>) {
    if let Some(p) = percentage
        && !(0.0..=100.0).contains(&p)
    {
        push(problems, field, format!("{p} is not a percentage: use 0 to 100"));
    }
}

/// Exactly one of exact, prefix, regex or suffix.
pub(crate) fn check_string_match(problems: &mut Problems, field: &str, matcher: &StringMatch) {
    let given = [&matcher.exact, &matcher.prefix, &matcher.regex, &matcher.suffix]
        .iter()
        .filter(|m| m.is_some())
        .count();
    if given != 1 {
        push(problems, field, "give exactly one of exact, prefix, regex or suffix");
    }
    if let Some(regex) = &matcher.regex {
        check_regex(problems, &format!("{field}.regex"), regex);
    }
    for text in [&matcher.exact, &matcher.prefix, &matcher.suffix].into_iter().flatten() {
        check_no_control(problems, field, text);
    }
}

/// An HTTP token (RFC 9110 `tchar`s): what a method or header name may be; the CORS headers
/// list them comma separated, so a comma or space inside one would split it.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

pub(crate) fn cors_policy(problems: &mut Problems, spec: &CorsPolicySpec) {
    let config = &spec.config;
    for (i, origin) in config.allow_origins.iter().enumerate() {
        check_string_match(problems, &format!("spec.config.allowOrigins[{i}]"), origin);
    }
    for (i, method) in config.allow_methods.iter().enumerate() {
        if !is_token(method) {
            push(
                problems,
                format!("spec.config.allowMethods[{i}]"),
                format!("{method:?} is not an HTTP method such as GET or *"),
            );
        }
    }
    for (field, names) in [
        ("allowHeaders", &config.allow_headers),
        ("exposeHeaders", &config.expose_headers),
    ] {
        for (i, name) in names.iter().enumerate() {
            let here = format!("spec.config.{field}[{i}]");
            if !is_token(name) {
                push(
                    problems,
                    &here,
                    format!("{name:?} is not a header name such as x-custom or *"),
                );
            }
        }
    }
    check_duration(
        problems,
        "spec.config.maxAge",
        config.max_age.as_deref(),
        std::time::Duration::ZERO,
    );
}

pub(crate) fn mirror_policy(problems: &mut Problems, spec: &MirrorPolicySpec) {
    check_percentage(problems, "spec.config.percentage", spec.config.percentage);
}

const VALIDATION_POLICIES: [&str; 3] = ["REQUIRE_VALID", "ALLOW_MISSING", "ALLOW_MISSING_OR_FAILED"];

pub(crate) fn jwt_policy(problems: &mut Problems, spec: &JwtPolicySpec) {
    let config = &spec.config;
    if let Some(policy) = &config.validation_policy
        && !VALIDATION_POLICIES.contains(&policy.as_str())
    {
        push(
            problems,
            "spec.config.validationPolicy",
            format!("{policy:?} is not one of {}", VALIDATION_POLICIES.join(", ")),
        );
    }
    for (i, claim) in config.claims.iter().enumerate() {
        let base = format!("spec.config.claims[{i}]");
        if claim.key.is_empty() {
            push(problems, format!("{base}.key"), "is required");
        }
        if claim.values.is_empty() && claim.not_values.is_empty() {
            push(problems, base.clone(), "give values or notValues (or both)");
        }
        for (field, list) in [("values", &claim.values), ("notValues", &claim.not_values)] {
            for (j, value) in list.iter().enumerate() {
                if value.len() > 1 && value[1..value.len() - 1].contains('*') {
                    push(
                        problems,
                        format!("{base}.{field}[{j}]"),
                        format!("{value:?}: a `*` may only start or end a value"),
                    );
                }
            }
        }
    }
    for (i, scope) in config.required_scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            push(
                problems,
                format!("spec.config.requiredScopes[{i}]"),
                format!("{scope:?} is not a scope: one word, no spaces"),
            );
        }
    }
    if let Some(clear) = &config.clear_route_cache
        && !["AUTO", "FALSE", "TRUE"].contains(&clear.as_str())
    {
        push(
            problems,
            "spec.config.clearRouteCache",
            format!("{clear:?} is not one of AUTO, FALSE, TRUE"),
        );
    }
    for (name, provider) in &config.providers {
        let base = format!("spec.config.providers.{name}");
        match (&provider.local, &provider.remote) {
            (Some(_), Some(_)) => push(problems, &base, "give one of local or remote, not both"),
            (None, None) => {}
            (Some(local), None) => {
                if let Some(Err(message)) = local.inline.as_deref().map(check_jwks) {
                    push(problems, format!("{base}.local.inline"), message);
                }
            }
            (None, Some(remote)) => {
                if !(remote.url.starts_with("http://") || remote.url.starts_with("https://")) {
                    push(
                        problems,
                        format!("{base}.remote.url"),
                        format!("{:?} is not an http:// or https:// URL", remote.url),
                    );
                }
                for (field, text) in [("cacheDuration", &remote.cache_duration), ("timeout", &remote.timeout)] {
                    check_duration(
                        problems,
                        &format!("{base}.remote.{field}"),
                        text.as_deref(),
                        std::time::Duration::from_millis(1),
                    );
                }
            }
        }
        if let Some(source) = &provider.token_source {
            for (i, header) in source.headers.iter().enumerate() {
                check_modifiable_header_name(problems, &format!("{base}.tokenSource.headers[{i}].name"), &header.name);
            }
        }
        for (i, claim) in provider.claims_to_headers.iter().enumerate() {
            check_modifiable_header_name(problems, &format!("{base}.claimsToHeaders[{i}].header"), &claim.header);
            if claim.claim.is_empty() {
                push(problems, format!("{base}.claimsToHeaders[{i}].claim"), "is required");
            }
        }
        if !provider.output_payload_to_header.is_empty() {
            check_modifiable_header_name(
                problems,
                &format!("{base}.outputPayloadToHeader"),
                &provider.output_payload_to_header,
            );
        }
    }
}

/// A JWKS (`{"keys": [...]}`) or a PEM public key, as Envoy's `local_jwks` reads it.
fn check_jwks(text: &str) -> Result<(), String> {
    if crate::is_pem(text) {
        return crate::pem_to_jwks(text).map(|_| ());
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON key set ({{\"keys\": [...]}}) or a PEM public key: {e}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) if !keys.is_empty() => Ok(()),
        _ => Err("a key set needs a non-empty \"keys\" list".to_string()),
    }
}

const SIMPLE_LB: [&str; 5] = ["UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"];

pub(crate) fn load_balancer_policy(problems: &mut Problems, spec: &LoadBalancerPolicySpec) {
    let config = &spec.config;
    if let Some(simple) = &config.simple
        && !SIMPLE_LB.contains(&simple.as_str())
    {
        push(
            problems,
            "spec.config.simple",
            format!("{simple:?} is not one of {}", SIMPLE_LB.join(", ")),
        );
    }
    check_percentage(
        problems,
        "spec.config.healthyPanicThreshold",
        config.healthy_panic_threshold,
    );
    check_duration(
        problems,
        "spec.config.updateMergeWindow",
        config.update_merge_window.as_deref(),
        std::time::Duration::ZERO,
    );
    if config.simple.is_some() && config.consistent_hash.is_some() {
        push(
            problems,
            "spec.config",
            "give one of simple or consistentHash, not both",
        );
    }
    if let Some(hash) = &config.consistent_hash {
        let keys = [
            hash.http_header_name.is_some(),
            hash.http_cookie.is_some(),
            hash.use_source_ip,
            hash.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            push(
                problems,
                "spec.config.consistentHash",
                "give one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
            );
        }
    }
}

fn check_count(problems: &mut Problems, field: &str, value: Option<i32>) {
    if let Some(v) = value
        && v < 0
    {
        push(problems, field, format!("{v} is negative: use 0 or more"));
    }
}

pub(crate) fn connection_policy(problems: &mut Problems, spec: &ConnectionPolicySpec) {
    let ms = std::time::Duration::from_millis(1);
    if let Some(tcp) = &spec.config.tcp {
        check_count(problems, "spec.config.tcp.maxConnections", tcp.max_connections);
        check_duration(
            problems,
            "spec.config.tcp.connectTimeout",
            tcp.connect_timeout.as_deref(),
            ms,
        );
        if let Some(keepalive) = &tcp.tcp_keepalive {
            // Envoy takes whole seconds here.
            let second = std::time::Duration::from_secs(1);
            check_duration(
                problems,
                "spec.config.tcp.tcpKeepalive.time",
                keepalive.time.as_deref(),
                second,
            );
            check_duration(
                problems,
                "spec.config.tcp.tcpKeepalive.interval",
                keepalive.interval.as_deref(),
                second,
            );
        }
    }
    if let Some(http) = &spec.config.http {
        check_count(
            problems,
            "spec.config.http.maxRequestsPerConnection",
            http.max_requests_per_connection,
        );
        check_count(problems, "spec.config.http.maxRetries", http.max_retries);
        check_count(problems, "spec.config.http.maxRequests", http.max_requests);
        check_count(
            problems,
            "spec.config.http.maxPendingRequests",
            http.max_pending_requests,
        );
        check_duration(
            problems,
            "spec.config.http.idleTimeout",
            http.idle_timeout.as_deref(),
            ms,
        );
    }
}
