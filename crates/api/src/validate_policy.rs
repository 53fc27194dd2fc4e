//! Semantic checks of the policy kinds. Each problem is `(field path, message)`.

use crate::policy::{
    AccessPolicySpec, FailoverPolicySpec, FaultInjectionPolicySpec, HeaderManipulationPolicySpec,
    OutlierDetectionPolicySpec, RetryTimeoutPolicySpec,
};

type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

/// Every duration of these kinds becomes an Envoy duration in whole milliseconds (route and
/// per-try timeouts, `FaultDelay.fixed_delay` with `gt: {}`, `OutlierDetection.interval` and
/// `base_ejection_time` with `gt: {}`), so each is 1ms to Envoy's largest.
fn check_duration(problems: &mut Problems, field: &str, text: &Option<String>) {
    crate::envoy_limits::check_duration(problems, field, text.as_deref(), std::time::Duration::from_millis(1));
}

fn check_percentage(problems: &mut Problems, field: &str, percentage: Option<f64>) {
    if let Some(p) = percentage
        && !(0.0..=100.0).contains(&p)
    {
        push(problems, field, format!("{p} is not a percentage: use 0 to 100"));
    }
}

fn is_cidr(text: &str) -> bool {
    let (address, length) = text
        .split_once('/')
        .unwrap_or((text, if text.contains(':') { "128" } else { "32" }));
    match (address.parse::<std::net::IpAddr>(), length.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(len)) => len <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(len)) => len <= 128,
        _ => false,
    }
}

/// Literal text as a regex, as the translator writes AccessPolicy path suffixes and header
/// values for Envoy: a backslash before every character but letters, digits, '/', '-' and '_'.
/// One function for both, so apply checks exactly the regex Envoy will get.
pub fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

pub(crate) fn access_policy(problems: &mut Problems, spec: &AccessPolicySpec) {
    if let Some(mode) = spec.config.authn.as_ref().and_then(|a| a.tls_mode.as_ref())
        && !["DISABLE", "PERMISSIVE", "STRICT"].contains(&mode.as_str())
    {
        push(
            problems,
            "spec.config.authn.tlsMode",
            format!("{mode:?} is not one of DISABLE, PERMISSIVE, STRICT"),
        );
    }
    let list: Vec<(&str, usize, &crate::policy::Authz)> = match (&spec.config.authz_list, &spec.config.authz) {
        (Some(list), _) => list
            .iter()
            .enumerate()
            .map(|(i, a)| ("spec.config.authzList", i, a))
            .collect(),
        (None, Some(authz)) => vec![("spec.config.authz", usize::MAX, authz)],
        (None, None) => Vec::new(),
    };
    for (base, index, authz) in list {
        let field = if index == usize::MAX {
            base.to_string()
        } else {
            format!("{base}[{index}]")
        };
        for (p, path) in authz.allowed_paths.iter().enumerate() {
            if path.is_empty() || !(path.starts_with('/') || path.starts_with('*')) {
                push(
                    problems,
                    format!("{field}.allowedPaths[{p}]"),
                    format!("{path:?}: use an exact path (/a), a prefix (/a*) or a suffix (*.png)"),
                );
            } else if let Some(suffix) = path.strip_prefix('*')
                && !path.ends_with('*')
            {
                // A suffix reaches Envoy as a regex; it must compile there.
                let here = format!("{field}.allowedPaths[{p}]");
                if let Err(message) = crate::envoy_limits::regex_problem(&format!(".*{}", regex_escape(suffix))) {
                    push(problems, here, format!("{path:?} as a suffix match: {message}"));
                }
            }
        }
        if let Some(request) = authz.matcher.as_ref().and_then(|m| m.request.as_ref()) {
            for (name, values) in &request.headers {
                let here = format!("{field}.match.request.headers.{name}");
                crate::envoy_limits::check_matched_header_name(problems, &here, name);
                if values.values.is_empty() {
                    continue;
                }
                // The values reach Envoy as one regex, `^(v1|v2|...)$`; it must compile there.
                let alternatives: Vec<String> = values.values.iter().map(|v| regex_escape(v)).collect();
                if let Err(message) = crate::envoy_limits::regex_problem(&format!("^({})$", alternatives.join("|"))) {
                    push(problems, format!("{here}.values"), format!("as one regex: {message}"));
                }
            }
        }
        for (m, method) in authz.allowed_methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                push(
                    problems,
                    format!("{field}.allowedMethods[{m}]"),
                    format!("{method:?} is not one of {}", METHODS.join(", ")),
                );
            }
        }
        for (name, blocks) in [
            ("allowedIpBlocks", &authz.allowed_ip_blocks),
            ("allowedRemoteIpBlocks", &authz.allowed_remote_ip_blocks),
        ] {
            for (b, block) in blocks.iter().enumerate() {
                if !is_cidr(block) {
                    push(
                        problems,
                        format!("{field}.{name}[{b}]"),
                        format!("{block:?} is not an IP address or CIDR range"),
                    );
                }
            }
        }
    }
}

pub(crate) fn retry_timeout_policy(problems: &mut Problems, spec: &RetryTimeoutPolicySpec) {
    check_duration(problems, "spec.config.requestTimeout", &spec.config.request_timeout);
    if let Some(retries) = &spec.config.retries {
        check_duration(problems, "spec.config.retries.perTryTimeout", &retries.per_try_timeout);
        if retries.attempts > 10 {
            push(
                problems,
                "spec.config.retries.attempts",
                format!("{} attempts: use at most 10", retries.attempts),
            );
        }
    }
    if spec.config.retries.is_none() && spec.config.request_timeout.is_none() {
        push(problems, "spec.config", "give retries, requestTimeout or both");
    }
}

pub(crate) fn fault_injection_policy(problems: &mut Problems, spec: &FaultInjectionPolicySpec) {
    let config = &spec.config;
    if config.delay.is_none() && config.abort.is_none() {
        push(problems, "spec.config", "give delay, abort or both");
    }
    if let Some(delay) = &config.delay {
        check_duration(
            problems,
            "spec.config.delay.fixedDelay",
            &Some(delay.fixed_delay.clone()),
        );
        check_percentage(problems, "spec.config.delay.percentage", delay.percentage);
    }
    if let Some(abort) = &config.abort {
        if !(200..=599).contains(&abort.http_status) {
            push(
                problems,
                "spec.config.abort.httpStatus",
                format!("{} is not an HTTP status: use 200 to 599", abort.http_status),
            );
        }
        check_percentage(problems, "spec.config.abort.percentage", abort.percentage);
    }
}

pub(crate) fn header_manipulation_policy(problems: &mut Problems, spec: &HeaderManipulationPolicySpec) {
    use crate::envoy_limits::{check_header_value, check_modifiable_header_name};
    let config = &spec.config;
    for (field, headers) in [
        ("appendRequestHeaders", &config.append_request_headers),
        ("appendResponseHeaders", &config.append_response_headers),
    ] {
        for (name, value) in headers {
            let here = format!("spec.config.{field}.{name}");
            check_modifiable_header_name(problems, &here, name);
            check_header_value(problems, &here, value);
        }
    }
    for (field, names) in [
        ("removeRequestHeaders", &config.remove_request_headers),
        ("removeResponseHeaders", &config.remove_response_headers),
    ] {
        for (i, name) in names.iter().enumerate() {
            check_modifiable_header_name(problems, &format!("spec.config.{field}[{i}]"), name);
        }
    }
}

pub(crate) fn outlier_detection_policy(problems: &mut Problems, spec: &OutlierDetectionPolicySpec) {
    check_duration(problems, "spec.config.interval", &spec.config.interval);
    check_duration(
        problems,
        "spec.config.baseEjectionTime",
        &spec.config.base_ejection_time,
    );
    if let Some(percent) = spec.config.max_ejection_percent
        && percent > 100
    {
        push(
            problems,
            "spec.config.maxEjectionPercent",
            format!("{percent} is not a percentage: use 0 to 100"),
        );
    }
}

pub(crate) fn failover_policy(problems: &mut Problems, spec: &FailoverPolicySpec) {
    for (i, mapping) in spec.config.locality_mappings.iter().enumerate() {
        if mapping.from.region.is_empty() {
            push(
                problems,
                format!("spec.config.localityMappings[{i}].from.region"),
                "is required (a cluster name in universal mode)",
            );
        }
        if mapping.to.is_empty() {
            push(
                problems,
                format!("spec.config.localityMappings[{i}].to"),
                "give at least one locality to fail over to",
            );
        }
    }
}
