//! Semantic checks of AccessLogPolicy. Each problem is `(field path, message)`.
//!
//! Bounds: every list is short (a proxy evaluates each filter and formats each field on every
//! request), every name is a plain header or filter-state key, so it cannot break out of the
//! Envoy format string it becomes part of (`%REQ(name)%`).
//!
//! Credentials are not logged: `authorization`, `proxy-authorization` and `cookie` among the
//! request headers and `set-cookie` among the response headers are refused, since access logs
//! are files and collectors that many people and systems read and keep. Matching on them in
//! `filters` is fine: a filter reads the header but writes nothing of it.

use crate::envoy_limits::{check_matched_header_name, check_no_control, check_regex};
use crate::resilience_policies::AccessLogPolicySpec;

type Problems = Vec<(String, String)>;

/// Most filters, and most names in each `included*` list, one policy may give.
pub const MAX_ACCESS_LOG_ENTRIES: usize = 32;

/// Longest header name or filter-state key accepted.
const MAX_NAME_BYTES: usize = 256;

/// Largest status code a matcher compares with (Envoy logs 0 for a request that got no response).
const MAX_STATUS: u32 = 999;

/// Request headers that carry credentials.
const SECRET_REQUEST_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Response headers that carry credentials.
const SECRET_RESPONSE_HEADERS: [&str; 1] = ["set-cookie"];

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

fn check_count(problems: &mut Problems, field: &str, count: usize) {
    if count > MAX_ACCESS_LOG_ENTRIES {
        push(
            problems,
            field,
            format!("has {count} entries: at most {MAX_ACCESS_LOG_ENTRIES}"),
        );
    }
}

/// A header name (optionally a `:pseudo-header`) or a filter-state key: letters, digits, `-`,
/// `_` and `.`, which keeps out `%`, `(`, `)` and `:` that would end the format command early.
fn check_logged_name(problems: &mut Problems, field: &str, name: &str, pseudo: bool) {
    let bare = if pseudo {
        name.strip_prefix(':').unwrap_or(name)
    } else {
        name
    };
    let plain = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain || name.len() > MAX_NAME_BYTES {
        push(
            problems,
            field,
            format!(
                "{name:?} is not a name Trellis can log: use at most {MAX_NAME_BYTES} letters, digits, '-', '_' and '.'"
            ),
        );
    }
}

pub(crate) fn access_log_policy(problems: &mut Problems, spec: &AccessLogPolicySpec) {
    let config = &spec.config;
    check_count(problems, "spec.config.filters", config.filters.len());
    for (i, filter) in config.filters.iter().enumerate() {
        let here = format!("spec.config.filters[{i}]");
        match (&filter.status_code_matcher, &filter.header_matcher) {
            (Some(_), Some(_)) => push(
                problems,
                &here,
                "give one of statusCodeMatcher and headerMatcher per filter: filters are alternatives, add another filter for the other",
            ),
            (Some(status), None) if status.value > MAX_STATUS => push(
                problems,
                format!("{here}.statusCodeMatcher.value"),
                format!("{} is not an HTTP status code: use 0 to {MAX_STATUS}", status.value),
            ),
            (None, Some(header)) => {
                check_matched_header_name(problems, &format!("{here}.headerMatcher.name"), &header.name);
                if let Some(value) = &header.value {
                    let field = format!("{here}.headerMatcher.value");
                    if header.regex {
                        check_regex(problems, &field, value);
                    } else {
                        check_no_control(problems, &field, value);
                    }
                }
            }
            _ => {}
        }
    }
    let lists = [
        (
            "includedRequestHeaders",
            &config.included_request_headers,
            &SECRET_REQUEST_HEADERS[..],
        ),
        (
            "includedResponseHeaders",
            &config.included_response_headers,
            &SECRET_RESPONSE_HEADERS[..],
        ),
        ("includedResponseTrailers", &config.included_response_trailers, &[][..]),
    ];
    for (list, names, secret) in lists {
        let field = format!("spec.config.{list}");
        check_count(problems, &field, names.len());
        for (i, name) in names.iter().enumerate() {
            let here = format!("{field}[{i}]");
            check_logged_name(problems, &here, name, true);
            if secret.iter().any(|s| s.eq_ignore_ascii_case(name)) {
                push(
                    problems,
                    &here,
                    format!("{name:?} carries credentials, which Trellis does not write to access logs: leave it out"),
                );
            }
        }
    }
    let field = "spec.config.includedFilterStateObjects";
    check_count(problems, field, config.included_filter_state_objects.len());
    for (i, key) in config.included_filter_state_objects.iter().enumerate() {
        check_logged_name(problems, &format!("{field}[{i}]"), key, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networking::HeaderMatcher;
    use crate::resilience_policies::{AccessLogConfig, AccessLogFilter, StatusCodeMatcher};

    fn problems(config: AccessLogConfig) -> Vec<(String, String)> {
        let mut problems = Problems::new();
        access_log_policy(
            &mut problems,
            &AccessLogPolicySpec {
                config,
                ..Default::default()
            },
        );
        problems
    }

    fn header(name: &str, value: Option<&str>, regex: bool) -> AccessLogFilter {
        AccessLogFilter {
            header_matcher: Some(HeaderMatcher {
                name: name.to_string(),
                value: value.map(str::to_string),
                regex,
                invert_match: false,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_the_documented_example_and_a_status_filter() {
        let config = AccessLogConfig {
            filters: vec![
                header("foo", Some("bar"), false),
                AccessLogFilter {
                    status_code_matcher: Some(StatusCodeMatcher {
                        value: 400,
                        comparator: crate::Comparator::Ge,
                    }),
                    ..Default::default()
                },
            ],
            included_request_headers: vec!["x-user-agent".into(), ":authority".into()],
            included_response_headers: vec!["x-server".into()],
            included_response_trailers: vec!["x-expires".into()],
            included_filter_state_objects: vec!["envoy.network.upstream_server_name".into()],
        };
        assert_eq!(problems(config), []);
    }

    #[test]
    fn refuses_each_bad_field_by_its_path() {
        let status = |value| AccessLogFilter {
            status_code_matcher: Some(StatusCodeMatcher {
                value,
                comparator: crate::Comparator::Eq,
            }),
            ..Default::default()
        };
        let both = AccessLogFilter {
            header_matcher: header("x", None, false).header_matcher,
            ..status(200)
        };
        let config = AccessLogConfig {
            filters: vec![
                both,
                status(1000),
                header("", None, false),
                header("x", Some("(a"), true),
            ],
            included_request_headers: vec!["Authorization".into(), "x)%".into()],
            included_response_headers: vec!["set-cookie".into()],
            included_filter_state_objects: vec!["a:b".into()],
            ..Default::default()
        };
        let fields: Vec<String> = problems(config).into_iter().map(|(field, _)| field).collect();
        assert_eq!(
            fields,
            [
                "spec.config.filters[0]",
                "spec.config.filters[1].statusCodeMatcher.value",
                "spec.config.filters[2].headerMatcher.name",
                "spec.config.filters[3].headerMatcher.value",
                "spec.config.includedRequestHeaders[0]",
                "spec.config.includedRequestHeaders[1]",
                "spec.config.includedResponseHeaders[0]",
                "spec.config.includedFilterStateObjects[0]",
            ]
        );
    }

    #[test]
    fn bounds_every_list() {
        let many: Vec<String> = (0..=MAX_ACCESS_LOG_ENTRIES).map(|i| format!("x-{i}")).collect();
        let config = AccessLogConfig {
            filters: vec![AccessLogFilter::default(); MAX_ACCESS_LOG_ENTRIES + 1],
            included_request_headers: many.clone(),
            included_response_headers: many.clone(),
            included_response_trailers: many.clone(),
            included_filter_state_objects: many,
        };
        assert_eq!(problems(config).len(), 5);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let config = AccessLogConfig {
            included_request_headers: vec![long],
            ..Default::default()
        };
        assert_eq!(problems(config).len(), 1);
    }
}
