//! Semantic checks of the add-on kinds and of Secrets. Each problem is `(field path, message)`.
//! The auth configuration (`glooAuth`) is checked in depth by the ext-auth engine at apply time;
//! here only its outline.

use crate::addons::{
    DestinationServer, ExtAuthPolicySpec, ExtAuthServerSpec, RateLimitAction, RateLimitClientConfigSpec,
    RateLimitDescriptor, RateLimitPolicySpec, RateLimitServerConfigSpec, RateLimitServerSettingsSpec, RawClientConfig,
};
use crate::core::{SecretSpec, decode_base64};
use crate::envoy_limits::{check_defined_status, check_matched_header_name, check_regex};

type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

/// The add-on timeouts become Envoy's `GrpcService.timeout` and the rate-limit filter's `timeout`,
/// in whole milliseconds; 0 would mean "no timeout", which these fields are not meant to allow.
fn check_duration(problems: &mut Problems, field: &str, text: &Option<String>) {
    crate::envoy_limits::check_duration(problems, field, text.as_deref(), std::time::Duration::from_millis(1));
}

fn check_server(problems: &mut Problems, field: &str, server: &Option<DestinationServer>) {
    if let Some(server) = server {
        if server.reference.name.is_empty() {
            push(
                problems,
                format!("{field}.ref.name"),
                "is required: the add-on's service name",
            );
        }
        if let Some(kind) = server.kind
            && kind != crate::common::DestinationKind::Service
        {
            push(
                problems,
                format!("{field}.kind"),
                format!(
                    "{}: an add-on server is found by the service it registers as; only SERVICE (the default) can name one",
                    kind.as_str()
                ),
            );
        }
        if let Some(number) = server.port.as_ref().and_then(|p| p.number)
            && !(1..=65535).contains(&number)
        {
            push(
                problems,
                format!("{field}.port.number"),
                format!("{number} is not a port (1-65535)"),
            );
        }
    }
}

pub(crate) fn secret(problems: &mut Problems, spec: &SecretSpec) {
    for (key, value) in &spec.data {
        if decode_base64(value).is_none() {
            push(
                problems,
                format!("data.{key}"),
                "is not base64 (use stringData for plain text)",
            );
        }
    }
}

/// The most of a request body a check may buffer.
const MAX_EXT_AUTH_BODY_BYTES: u32 = 1 << 20;

pub(crate) fn ext_auth_server(problems: &mut Problems, spec: &ExtAuthServerSpec) {
    check_server(problems, "spec.destinationServer", &spec.destination_server);
    check_duration(problems, "spec.requestTimeout", &spec.request_timeout);
    if let Some(status) = spec.status_on_error {
        check_defined_status(problems, "spec.statusOnError", status);
    }
    if let Some(body) = &spec.request_body
        && body
            .max_request_bytes
            .is_some_and(|n| n == 0 || n > MAX_EXT_AUTH_BODY_BYTES)
    {
        push(
            problems,
            "spec.requestBody.maxRequestBytes",
            format!(
                "must be between 1 and {MAX_EXT_AUTH_BODY_BYTES} (1 MiB): the proxy holds the body in memory for the check"
            ),
        );
    }
    if spec.http_service.is_some() {
        push(
            problems,
            "spec.httpService",
            "is not supported: Trellis calls ext-auth over gRPC (ext_authz v3)",
        );
    }
}

pub(crate) fn ext_auth_policy(problems: &mut Problems, spec: &ExtAuthPolicySpec) {
    if spec.config.server.name.is_empty() {
        push(
            problems,
            "spec.config.server.name",
            "is required: the ExtAuthServer to call",
        );
    }
    match (&spec.config.gloo_auth, &spec.config.custom_auth) {
        (Some(_), Some(_)) => push(problems, "spec.config", "set one of glooAuth and customAuth, not both"),
        (None, None) => push(problems, "spec.config", "set glooAuth (an auth config) or customAuth"),
        (Some(auth), None) => match auth.get("configs").and_then(|c| c.as_array()) {
            Some(configs) if !configs.is_empty() => {
                for (index, config) in configs.iter().enumerate() {
                    if !config.is_object() {
                        push(
                            problems,
                            format!("spec.config.glooAuth.configs[{index}]"),
                            "must be a mapping",
                        );
                    }
                }
            }
            _ => push(
                problems,
                "spec.config.glooAuth.configs",
                "must list at least one auth config",
            ),
        },
        (None, Some(_)) => {}
    }
}

fn descriptors(problems: &mut Problems, field: &str, list: &[RateLimitDescriptor]) {
    for (index, descriptor) in list.iter().enumerate() {
        let here = format!("{field}[{index}]");
        if descriptor.key.is_empty() {
            push(problems, format!("{here}.key"), "is required");
        }
        if let Some(limit) = &descriptor.rate_limit
            && limit.requests_per_unit == 0
        {
            push(problems, format!("{here}.rateLimit.requestsPerUnit"), "must be above 0");
        }
        descriptors(problems, &format!("{here}.descriptors"), &descriptor.descriptors);
    }
}

pub(crate) fn rate_limit_server_config(problems: &mut Problems, spec: &RateLimitServerConfigSpec) {
    for (index, server) in spec.destination_servers.iter().enumerate() {
        check_server(
            problems,
            &format!("spec.destinationServers[{index}]"),
            &Some(server.clone()),
        );
    }
    descriptors(problems, "spec.raw.descriptors", &spec.raw.descriptors);
    for (index, set) in spec.raw.set_descriptors.iter().enumerate() {
        let here = format!("spec.raw.setDescriptors[{index}]");
        if set.simple_descriptors.is_empty() {
            push(
                problems,
                format!("{here}.simpleDescriptors"),
                "must list at least one key",
            );
        }
        match &set.rate_limit {
            None => push(problems, format!("{here}.rateLimit"), "is required"),
            Some(limit) if limit.requests_per_unit == 0 => {
                push(problems, format!("{here}.rateLimit.requestsPerUnit"), "must be above 0")
            }
            Some(_) => {}
        }
    }
}

pub(crate) fn rate_limit_server_settings(problems: &mut Problems, spec: &RateLimitServerSettingsSpec) {
    if spec.enable_x_ratelimit_headers == Some(false) {
        push(
            problems,
            "spec.enableXRatelimitHeaders",
            "false is not supported yet: the x-ratelimit headers are always sent",
        );
    }
    check_server(problems, "spec.destinationServer", &spec.destination_server);
    check_duration(problems, "spec.requestTimeout", &spec.request_timeout);
}

fn action(problems: &mut Problems, field: &str, action: &RateLimitAction) {
    if let Some(metadata) = &action.metadata {
        if metadata.descriptor_key.is_empty() {
            push(problems, format!("{field}.metadata.descriptorKey"), "is required");
        }
        if metadata.metadata_key.key.is_empty() || metadata.metadata_key.path.is_empty() {
            push(
                problems,
                format!("{field}.metadata.metadataKey"),
                "needs a key (the filter, e.g. envoy.filters.http.ext_authz) and a path",
            );
        }
        if let Some(source) = metadata.source.as_deref()
            && !matches!(source, "DYNAMIC" | "ROUTE_ENTRY")
        {
            push(
                problems,
                format!("{field}.metadata.source"),
                "must be DYNAMIC or ROUTE_ENTRY",
            );
        }
    }
    let set = [
        action.source_cluster.is_some(),
        action.destination_cluster.is_some(),
        action.request_headers.is_some(),
        action.remote_address.is_some(),
        action.generic_key.is_some(),
        action.header_value_match.is_some(),
        action.metadata.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count();
    if set != 1 {
        push(
            problems,
            field,
            "set exactly one of sourceCluster, destinationCluster, requestHeaders, remoteAddress, genericKey, headerValueMatch, metadata",
        );
    }
    if let Some(headers) = &action.request_headers {
        if headers.header_name.is_empty() || headers.descriptor_key.is_empty() {
            push(
                problems,
                format!("{field}.requestHeaders"),
                "headerName and descriptorKey are required",
            );
        } else {
            // `RequestHeaders.header_name`: `HTTP_HEADER_NAME`, like a header matcher's name.
            check_matched_header_name(
                problems,
                &format!("{field}.requestHeaders.headerName"),
                &headers.header_name,
            );
        }
    }
    if let Some(generic) = &action.generic_key
        && generic.descriptor_value.is_empty()
    {
        push(problems, format!("{field}.genericKey.descriptorValue"), "is required");
    }
    if let Some(matcher) = &action.header_value_match {
        if matcher.descriptor_value.is_empty() {
            push(
                problems,
                format!("{field}.headerValueMatch.descriptorValue"),
                "is required",
            );
        }
        if matcher.headers.is_empty() {
            push(
                problems,
                format!("{field}.headerValueMatch.headers"),
                "must list at least one header",
            );
        }
        for (index, header) in matcher.headers.iter().enumerate() {
            let given = [
                header.exact_match.is_some(),
                header.regex_match.is_some(),
                header.present_match.is_some(),
            ]
            .into_iter()
            .filter(|g| *g)
            .count();
            if header.name.is_empty() || given > 1 {
                push(
                    problems,
                    format!("{field}.headerValueMatch.headers[{index}]"),
                    "needs a name and at most one of exactMatch, regexMatch, presentMatch",
                );
            } else {
                check_matched_header_name(
                    problems,
                    &format!("{field}.headerValueMatch.headers[{index}].name"),
                    &header.name,
                );
            }
            if let Some(pattern) = &header.regex_match {
                check_regex(
                    problems,
                    &format!("{field}.headerValueMatch.headers[{index}].regexMatch"),
                    pattern,
                );
            }
        }
    }
}

fn client_config(problems: &mut Problems, field: &str, raw: &RawClientConfig) {
    if raw.rate_limits.is_empty() {
        push(problems, format!("{field}.rateLimits"), "must list at least one entry");
    }
    for (index, limits) in raw.rate_limits.iter().enumerate() {
        let here = format!("{field}.rateLimits[{index}]");
        if limits.actions.is_empty() == limits.set_actions.is_empty() {
            push(problems, &here, "set one of actions and setActions");
        }
        for (i, a) in limits.actions.iter().enumerate() {
            action(problems, &format!("{here}.actions[{i}]"), a);
        }
        for (i, a) in limits.set_actions.iter().enumerate() {
            action(problems, &format!("{here}.setActions[{i}]"), a);
        }
    }
}

pub(crate) fn rate_limit_client_config(problems: &mut Problems, spec: &RateLimitClientConfigSpec) {
    client_config(problems, "spec.raw", &spec.raw);
}

pub(crate) fn rate_limit_policy(problems: &mut Problems, spec: &RateLimitPolicySpec) {
    if spec.config.server_settings.name.is_empty() {
        push(
            problems,
            "spec.config.serverSettings.name",
            "is required: a RateLimitServerSettings",
        );
    }
    if spec.config.ratelimit_server_config.name.is_empty() {
        push(
            problems,
            "spec.config.ratelimitServerConfig.name",
            "is required: a RateLimitServerConfig",
        );
    }
    match (&spec.config.ratelimit_client_config, &spec.config.raw) {
        (Some(_), Some(_)) => push(
            problems,
            "spec.config",
            "set one of ratelimitClientConfig and raw, not both",
        ),
        (None, None) => push(
            problems,
            "spec.config",
            "set ratelimitClientConfig or raw (the rate-limit actions)",
        ),
        (Some(reference), None) if reference.name.is_empty() => {
            push(problems, "spec.config.ratelimitClientConfig.name", "is required")
        }
        (None, Some(raw)) => client_config(problems, "spec.config.raw", raw),
        _ => {}
    }
}
