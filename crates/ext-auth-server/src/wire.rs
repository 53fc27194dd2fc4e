//! Envoy's ext_authz v3 messages to and from the pure types, in one place.

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use trellis_extauth::{CheckInput, Outcome};

/// gRPC codes Envoy reads in `CheckResponse.status`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;

/// What an evaluator sees of a CheckRequest. Header names are lowercased; with Envoy's
/// `encode_raw_headers`, repeated headers are joined as Envoy joins them otherwise (`, `, or
/// `; ` for cookies).
pub fn to_input(request: &CheckRequest) -> CheckInput {
    let mut input = CheckInput::default();
    let Some(attributes) = &request.attributes else {
        return input;
    };
    input.context_extensions = attributes
        .context_extensions
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(source) = &attributes.source {
        input.source_principal = source.principal.clone();
        if let Some(AddressKind::SocketAddress(socket)) = source.address.as_ref().and_then(|a| a.address.as_ref()) {
            input.source_address = socket.address.clone();
        }
    }
    let Some(http) = attributes.request.as_ref().and_then(|r| r.http.as_ref()) else {
        return input;
    };
    input.method = http.method.clone();
    input.scheme = http.scheme.clone();
    input.host = http.host.clone();
    input.path = http.path.clone();
    // `packAsBytes` sends it as raw bytes, otherwise as a string.
    input.body = if http.raw_body.is_empty() {
        http.body.clone()
    } else {
        String::from_utf8_lossy(&http.raw_body).into_owned()
    };
    for (name, value) in &http.headers {
        input.headers.insert(name.to_ascii_lowercase(), value.clone());
    }
    for header in http.header_map.iter().flat_map(|m| &m.headers) {
        let value = if header.raw_value.is_empty() {
            header.value.clone()
        } else {
            String::from_utf8_lossy(&header.raw_value).into_owned()
        };
        let name = header.key.to_ascii_lowercase();
        let separator = if name == "cookie" { "; " } else { ", " };
        input
            .headers
            .entry(name)
            .and_modify(|existing| {
                existing.push_str(separator);
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    input
}

/// The answer Envoy acts on: allowed with headers set on the upstream request (overwriting
/// any a client sent), or denied with the status, headers and body the client gets.
pub fn to_response(outcome: Outcome) -> CheckResponse {
    to_response_removing(outcome, Vec::new())
}

/// [`to_response`], also removing `remove` from an allowed request (headers auth could have set
/// and did not, so a client's own copies do not pass for auth's).
pub fn to_response_removing(outcome: Outcome, remove: Vec<String>) -> CheckResponse {
    match outcome {
        Outcome::Allow { upstream_headers } => CheckResponse {
            status: Some(RpcStatus {
                code: OK,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: header_options(upstream_headers, HeaderAppendAction::OverwriteIfExistsOrAdd),
                headers_to_remove: remove,
                ..Default::default()
            })),
            ..Default::default()
        },
        Outcome::Deny { status, headers, body } => CheckResponse {
            status: Some(RpcStatus {
                code: if status == 401 {
                    UNAUTHENTICATED
                } else {
                    PERMISSION_DENIED
                },
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: i32::from(status),
                }),
                // Appended, so several set-cookie headers all reach the client.
                headers: header_options(headers, HeaderAppendAction::AppendIfExistsOrAdd),
                body,
            })),
            ..Default::default()
        },
    }
}

/// Reads another ext_authz server's answer back as an outcome (for passthrough).
pub fn from_response(response: &CheckResponse) -> Outcome {
    let code = response.status.as_ref().map_or(OK, |s| s.code);
    let pairs = |headers: &[HeaderValueOption]| {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
            .collect::<Vec<_>>()
    };
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) if code == OK => Outcome::Allow {
            upstream_headers: pairs(&ok.headers),
        },
        None if code == OK => Outcome::allow(),
        Some(HttpResponse::DeniedResponse(denied) | HttpResponse::ErrorResponse(denied)) => Outcome::Deny {
            status: denied
                .status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .filter(|s| *s >= 100)
                .unwrap_or(403),
            headers: pairs(&denied.headers),
            body: denied.body.clone(),
        },
        _ => Outcome::deny(if code == UNAUTHENTICATED { 401 } else { 403 }),
    }
}

fn header_options(headers: Vec<(String, String)>, action: HeaderAppendAction) -> Vec<HeaderValueOption> {
    headers
        .into_iter()
        .map(|(key, value)| HeaderValueOption {
            header: Some(HeaderValue {
                key,
                value,
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_a_round_trip_through_the_wire() {
        let cases = [
            Outcome::Allow {
                upstream_headers: vec![("x-user-id".into(), "alice".into())],
            },
            Outcome::Deny {
                status: 401,
                headers: vec![("www-authenticate".into(), "Basic realm=\"r\"".into())],
                body: "no".into(),
            },
            Outcome::Deny {
                status: 302,
                headers: vec![("location".into(), "https://idp/auth".into())],
                body: String::new(),
            },
        ];
        for outcome in cases {
            assert_eq!(from_response(&to_response(outcome.clone())), outcome);
        }
        let denied = to_response(Outcome::deny(401));
        assert_eq!(denied.status.unwrap().code, UNAUTHENTICATED);
    }
}
