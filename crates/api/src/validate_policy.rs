//! Semantic checks of the policy kinds. Each problem is `(field path, message)`.

use crate::policy::{
    AccessPolicySpec, FailoverPolicySpec, FaultInjectionPolicySpec, HeaderManipulationPolicySpec,
    OutlierDetectionPolicySpec, RetryTimeoutPolicySpec, duration_ms,
};

type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

fn check_duration(problems: &mut Problems, field: &str, text: &Option<String>) {
    if let Some(text) = text {
        match duration_ms(text) {
            Some(ms) if ms >= 1 => {}
            Some(_) => push(problems, field, format!("{text:?} is shorter than the 1ms granularity")),
            None => push(
                problems,
                field,
                format!("{text:?} is not a duration such as \"1.5s\", \"500ms\" or \"2m\""),
            ),
        }
    }
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
    let config = &spec.config;
    let names = config
        .append_request_headers
        .keys()
        .map(|n| ("appendRequestHeaders", n))
        .chain(
            config
                .remove_request_headers
                .iter()
                .map(|n| ("removeRequestHeaders", n)),
        )
        .chain(
            config
                .append_response_headers
                .keys()
                .map(|n| ("appendResponseHeaders", n)),
        )
        .chain(
            config
                .remove_response_headers
                .iter()
                .map(|n| ("removeResponseHeaders", n)),
        );
    for (field, name) in names {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || name.eq_ignore_ascii_case("host") {
            push(
                problems,
                format!("spec.config.{field}"),
                format!(
                    "{name:?} cannot be changed: use a header name of letters, digits, '-' and '_' (not host or a :pseudo-header)"
                ),
            );
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
