//! What Envoy would refuse, so that apply refuses it first, with the field, instead of every
//! sidecar NACKing the translated config.
//!
//! Sources, per check: the `validate.rules` of Envoy's v3 API protos (quoted at each constant),
//! Envoy's own config checks where the protos say nothing (named at each), and each limit
//! confirmed against Envoy 1.40 with `envoy --mode validate` on the config Trellis generates.

use std::time::Duration;

use regex_syntax::hir::{Hir, HirKind};

use trellis_base::duration::{DurationError, ENVOY_MAX_DURATION, parse_duration_at_most};

pub(crate) type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

// === durations ===

/// A duration that becomes Envoy config: at most [`ENVOY_MAX_DURATION`], and at least `min`
/// (Envoy's `gt: {}` rules, e.g. `FaultDelay.fixed_delay`, `OutlierDetection.interval`, become
/// "at least 1ms" because Trellis hands Envoy whole milliseconds).
pub(crate) fn check_duration(problems: &mut Problems, field: &str, text: Option<&str>, min: Duration) {
    let Some(text) = text else { return };
    match parse_duration_at_most(text, ENVOY_MAX_DURATION) {
        Ok(duration) if duration < min => push(
            problems,
            field,
            format!(
                "{text:?} is shorter than {}ms, the least Envoy accepts here",
                min.as_millis()
            ),
        ),
        Ok(_) => {}
        Err(error @ DurationError::TooLarge { .. }) => push(problems, field, format!("{error} (Envoy's limit)")),
        Err(error) => push(problems, field, error.to_string()),
    }
}

// === weights ===

/// `RouteAction.weighted_clusters`: Envoy adds the weights in 64 bits and refuses a route whose
/// sum "exceeds 4294967295" (`WeightedClusterEntry` loop in `source/common/router/config_impl.cc`).
pub(crate) fn check_weight_sum(problems: &mut Problems, field: &str, weights: impl Iterator<Item = Option<u32>>) {
    let sum: u64 = weights.map(|w| u64::from(w.unwrap_or(0))).sum();
    if sum > u64::from(u32::MAX) {
        push(
            problems,
            field,
            format!(
                "the weights add up to {sum}: Envoy allows at most {} for a route; weights are relative, so scale them down (e.g. 80 and 20)",
                u32::MAX
            ),
        );
    }
}

// === HTTP statuses ===

/// `envoy.type.v3.StatusCode`, which `HttpStatus.code` (ext_authz `status_on_error`) must be one
/// of: `(validate.rules).enum = {defined_only: true not_in: 0}` (`envoy/type/v3/http_status.proto`).
const ENVOY_STATUS_CODES: [u32; 56] = [
    100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403,
    404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500,
    501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

pub(crate) fn check_defined_status(problems: &mut Problems, field: &str, status: u32) {
    if !ENVOY_STATUS_CODES.contains(&status) {
        push(
            problems,
            field,
            format!("{status} is not a status Envoy can send here: use a standard code such as 403 or 503"),
        );
    }
}

// === strings that become headers, paths and host names ===

/// Envoy's `HTTP_HEADER_NAME` / `HTTP_HEADER_VALUE` rules with `strict: false` (header names and
/// values, `prefix_rewrite`, `host_rewrite_literal`, `host_redirect`, `path_redirect`): the
/// pattern `^[^\x00\n\r]*$` (`validate/validate.proto`).
pub(crate) fn check_no_control(problems: &mut Problems, field: &str, text: &str) {
    if text.contains(['\0', '\r', '\n']) {
        push(
            problems,
            field,
            format!("{text:?} contains a NUL, CR or LF, which Envoy refuses in headers, paths and host names"),
        );
    }
}

/// `HeaderValue.key` and `.value`: `max_bytes: 16384` (`envoy/config/core/v3/base.proto`).
const MAX_HEADER_BYTES: usize = 16_384;

/// A header name a policy adds or removes: Envoy refuses `:`-prefixed names and `host` ("may not
/// be modified/removed", `HeaderParser` in `source/common/router/header_parser.cc`). Trellis asks
/// for an HTTP token of letters, digits, `-` and `_`, which also keeps out CR/LF and spaces.
pub(crate) fn check_modifiable_header_name(problems: &mut Problems, field: &str, name: &str) {
    let token = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !token || name.eq_ignore_ascii_case("host") || name.len() > MAX_HEADER_BYTES {
        push(
            problems,
            field,
            format!(
                "{name:?} cannot be changed: use a header name of letters, digits, '-' and '_' (not host or a :pseudo-header)"
            ),
        );
    }
}

/// A header name a matcher reads: `HeaderMatcher.name` is `min_len: 1` and `HTTP_HEADER_NAME`.
pub(crate) fn check_matched_header_name(problems: &mut Problems, field: &str, name: &str) {
    if name.is_empty() {
        push(problems, field, "is required");
    } else {
        check_no_control(problems, field, name);
    }
}

/// Envoy's header formatter commands that take no argument (`%START_TIME%` may take one), each
/// accepted by Envoy 1.40 in `request_headers_to_add`; an unknown one is refused ("Not supported
/// field in StreamInfo").
const FORMAT_COMMANDS: [&str; 50] = [
    "START_TIME",
    "REQUEST_HEADERS_BYTES",
    "PROTOCOL",
    "UPSTREAM_PROTOCOL",
    "HOSTNAME",
    "ROUTE_NAME",
    "VIRTUAL_CLUSTER_NAME",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_HOST",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_REMOTE_PORT",
    "UPSTREAM_LOCAL_ADDRESS",
    "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_LOCAL_PORT",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_URI_SAN",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_PEER_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_TLS_SESSION_ID",
    "DOWNSTREAM_TLS_CIPHER",
    "DOWNSTREAM_TLS_VERSION",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "REQUESTED_SERVER_NAME",
    "STREAM_ID",
    "CONNECTION_ID",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "REQUEST_DURATION",
    "DURATION",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_TLS_VERSION",
    "BYTES_RECEIVED",
];

/// Commands that need an argument in parentheses: `%REQ(x-user)%`; `%REQ()%` is refused.
const FORMAT_COMMANDS_WITH_ARGUMENT: [&str; 10] = [
    "REQ",
    "RESP",
    "TRAILER",
    "UPSTREAM_METADATA",
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "ENVIRONMENT",
    "PER_REQUEST_STATE",
];

/// A header value a policy adds. Envoy reads `%` in it as a formatter command: a lone `%`
/// (`100%`) or an unknown command is refused ("Couldn't find valid command at position N");
/// a literal percent sign is written `%%`.
pub(crate) fn check_header_value(problems: &mut Problems, field: &str, value: &str) {
    check_no_control(problems, field, value);
    if value.len() > MAX_HEADER_BYTES {
        push(
            problems,
            field,
            format!("is {} bytes long: Envoy allows at most {MAX_HEADER_BYTES}", value.len()),
        );
    }
    if let Err(message) = check_format(value) {
        push(problems, field, format!("{value:?}: {message}"));
    }
}

fn check_format(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = &value[start + 1..end];
        let mut argument = None;
        if bytes.get(end) == Some(&b'(') {
            let close = value[end..].find(')').map(|offset| end + offset);
            let Some(close) = close else {
                return Err(format!("the command at position {start} has no closing ')'"));
            };
            argument = Some(&value[end + 1..close]);
            end = close + 1;
        }
        if bytes.get(end) == Some(&b':') {
            end += 1;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
        }
        let lone = || {
            format!(
                "a '%' at position {start} starts an Envoy command such as %DOWNSTREAM_REMOTE_ADDRESS% or %REQ(x-header)%; write a literal percent sign as %%"
            )
        };
        if name.is_empty() || bytes.get(end) != Some(&b'%') {
            return Err(lone());
        }
        let known = match argument {
            Some(argument) => {
                (FORMAT_COMMANDS_WITH_ARGUMENT.contains(&name) && !argument.is_empty()) || name == "START_TIME"
            }
            None => FORMAT_COMMANDS.contains(&name),
        };
        if !known {
            return Err(format!(
                "%{name}{}% is not a command Envoy knows (write a literal percent sign as %%)",
                argument.map(|a| format!("({a})")).unwrap_or_default()
            ));
        }
        i = end + 1;
    }
    Ok(())
}

// === regular expressions ===

/// Envoy compiles every regex with RE2 and refuses a program of more than 100 instructions
/// (runtime `re2.max_program_size.error_level`, default 100: `RegexMatcher.GoogleRE2` in
/// `envoy/type/matcher/v3/regex.proto`); Trellis does not raise it.
pub(crate) const RE2_MAX_PROGRAM_SIZE: u64 = 100;

/// RE2 refuses counted repetitions above 1000 ("invalid repetition size"; `kMaxRepeat` in RE2).
const RE2_MAX_REPEAT: u32 = 1000;

/// Patterns are short: anything longer cannot fit the program size, and refusing it before
/// parsing keeps apply fast on hostile input.
const MAX_REGEX_BYTES: usize = 1024;

/// A regex Envoy would compile: valid syntax for both the `regex` crate and RE2, no construct
/// the two read differently, and a program small enough for Envoy. The message says what to do.
pub(crate) fn check_regex(problems: &mut Problems, field: &str, pattern: &str) {
    if let Err(message) = regex_problem(pattern) {
        push(problems, field, message);
    }
}

pub(crate) fn regex_problem(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(format!(
            "the regular expression is {} bytes long: at most {MAX_REGEX_BYTES}",
            pattern.len()
        ));
    }
    if let Err(error) = regex::Regex::new(pattern) {
        return Err(format!(
            "invalid regular expression: {}",
            error.to_string().lines().last().unwrap_or("")
        ));
    }
    re2_incompatibility(pattern)?;
    // `regex::Regex::new` accepted it, so the parser (same crate, same defaults) does too.
    let hir = regex_syntax::Parser::new()
        .parse(pattern)
        .map_err(|error| format!("invalid regular expression: {error}"))?;
    if let Some(count) = largest_repeat(&hir)
        && count > RE2_MAX_REPEAT
    {
        return Err(format!(
            "the repetition count {count} is more than RE2 (Envoy's regex engine) accepts: at most {RE2_MAX_REPEAT}"
        ));
    }
    let size = min_program_size(&hir);
    if size > RE2_MAX_PROGRAM_SIZE {
        return Err(format!(
            "the regular expression is too complex for Envoy: RE2 compiles it to at least {size} instructions, Envoy allows {RE2_MAX_PROGRAM_SIZE}; use fewer or smaller repetitions ({{n,m}}) and alternatives"
        ));
    }
    Ok(())
}

/// Constructs the `regex` crate accepts but RE2 refuses, or reads differently (which would make
/// Envoy match other requests than the ones validated here). RE2's syntax: flags `i`, `m`, `s`,
/// `U` only; no character class set operations or nested classes; no `\<`, `\>`, `\b{...}`.
fn re2_incompatibility(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let next = chars.get(i + 1).copied();
                if matches!(next, Some('<' | '>'))
                    || (matches!(next, Some('b' | 'B')) && chars.get(i + 2) == Some(&'{'))
                {
                    return Err(format!(
                        "\\{} is a word-boundary assertion here but RE2 (Envoy's regex engine) does not have it; use \\b",
                        next.unwrap_or_default()
                    ));
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                i += 1;
                // A `]` right after `[` or `[^` is a literal in both engines.
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                continue;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // A POSIX class such as [:alpha:]: RE2 has them too.
                match chars[i..].iter().position(|c| *c == ']') {
                    Some(offset) => i += offset + 1,
                    None => i += 1,
                }
                continue;
            }
            '[' => {
                return Err(
                    "a '[' inside a character class nests classes here but is a literal for RE2 (Envoy's regex engine); escape it as \\["
                        .into(),
                );
            }
            ']' if in_class => in_class = false,
            '&' | '-' | '~' if in_class && chars.get(i + 1) == Some(&c) => {
                return Err(format!(
                    "{c}{c} in a character class is a set operation here but RE2 (Envoy's regex engine) has none; list the characters instead"
                ));
            }
            '(' if !in_class && chars.get(i + 1) == Some(&'?') => {
                let flags: String = chars[i + 2..].iter().take_while(|c| !matches!(c, ':' | ')')).collect();
                let named = flags.starts_with('P') || flags.starts_with('<');
                if !named && let Some(flag) = flags.chars().find(|f| !matches!(f, 'i' | 'm' | 's' | 'U' | '-')) {
                    return Err(format!(
                        "the flag {flag:?} is not supported by RE2 (Envoy's regex engine): use i, m, s or U"
                    ));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn largest_repeat(hir: &Hir) -> Option<u32> {
    match hir.kind() {
        HirKind::Repetition(repetition) => {
            let own = repetition.max.unwrap_or(repetition.min).max(repetition.min);
            Some(own.max(largest_repeat(&repetition.sub).unwrap_or(0)))
        }
        HirKind::Capture(capture) => largest_repeat(&capture.sub),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts.iter().filter_map(largest_repeat).max(),
        _ => None,
    }
}

/// A lower bound of the size of the program RE2 compiles for the regex, so that nothing Envoy
/// accepts is refused. Calibrated against the sizes Envoy 1.40 reports (tests below): one
/// instruction per literal byte and per character class, counted repetitions unrolled (each
/// optional copy adds one), two per capture group, the largest branch of an alternation (RE2
/// factors common prefixes), nothing for the literal prefix after a leading `^` (RE2 matches it
/// with memcmp), and two for the program's fail and match instructions.
fn min_program_size(hir: &Hir) -> u64 {
    2u64.saturating_add(size_of(hir))
}

fn size_of(hir: &Hir) -> u64 {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(literal) => literal.0.len() as u64,
        HirKind::Class(_) => 1,
        HirKind::Capture(capture) => size_of(&capture.sub).saturating_add(2),
        HirKind::Repetition(repetition) => {
            let sub = size_of(&repetition.sub);
            let min = u64::from(repetition.min);
            match repetition.max {
                Some(max) => sub.saturating_mul(min).saturating_add(
                    u64::from(max.saturating_sub(repetition.min)).saturating_mul(sub.saturating_add(1)),
                ),
                None => sub.saturating_mul(min.max(1)),
            }
        }
        HirKind::Alternation(branches) => branches.iter().map(size_of).max().unwrap_or(0),
        HirKind::Concat(parts) => {
            let mut rest = parts.as_slice();
            if let Some((first, after)) = rest.split_first()
                && matches!(first.kind(), HirKind::Look(regex_syntax::hir::Look::Start))
            {
                let prefix = after
                    .iter()
                    .take_while(|p| matches!(p.kind(), HirKind::Literal(_) | HirKind::Class(_)))
                    .count();
                rest = &after[prefix..];
            }
            rest.iter().map(size_of).fold(0, u64::saturating_add)
        }
    }
}

#[cfg(test)]
mod tests;
