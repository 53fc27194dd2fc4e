//! IR routes to Envoy routes. Kept apart from the sidecar so each IR match and action maps to
//! Envoy in exactly one place.
//!
//! Forwarding always uses `weighted_clusters`, even for one destination, so every forward has
//! one shape. Nothing is added per destination: each upstream's cluster carries its own routing
//! key, as the TLS SNI of its connections.
//!
//! Route policies ride on the route: retries and the timeout on its forward action (other
//! actions never reach an upstream), header edits on the route itself (Envoy applies response
//! headers to direct responses and redirects too), and a fault as the route's override of the
//! fault filter that the sidecar's outbound connection manager always carries, empty.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route, RouteAction,
    RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode},
    route::Action,
    route_action::{ClusterSpecifier, HostRewriteSpecifier},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort::ErrorType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use trellis_model::{ir, policy};

use crate::common::{duration_ms, http_filter};

/// The HTTP fault filter: in every outbound connection manager, configured per route.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";

pub(crate) fn virtual_host(vhost: &ir::VirtualHost) -> VirtualHost {
    VirtualHost {
        name: vhost.name.clone(),
        domains: vhost.domains.clone(),
        routes: vhost.routes.iter().map(route).collect(),
        ..Default::default()
    }
}

pub(crate) fn route(route: &ir::Route) -> Route {
    let policies = &route.policies;
    let mut action = action(&route.action);
    if let Action::Route(forward) = &mut action {
        forward.retry_policy = policies.retry.as_ref().map(retry_policy);
        forward.timeout = policies.timeout_ms.map(duration_ms);
        forward.request_mirror_policies = policies
            .mirror
            .as_deref()
            .into_iter()
            .map(crate::http_policies::mirror_policy)
            .collect();
        forward.hash_policy = crate::upstream_traffic::hash_policies(&policies.hash);
    }
    Route {
        name: route.name.clone(),
        r#match: Some(route_match(&route.matcher)),
        action: Some(action),
        typed_per_filter_config: policies
            .fault
            .iter()
            .map(|fault| (FAULT_FILTER.to_string(), pack_any(http_fault(fault))))
            .chain(crate::addons::route_configs(policies))
            .chain(crate::http_policies::route_configs(policies))
            .chain(
                policies
                    .transformation
                    .as_deref()
                    .map(crate::transformation::route_config),
            )
            .collect(),
        request_headers_to_add: headers_to_add(&policies.request_headers),
        request_headers_to_remove: policies.request_headers.remove.clone(),
        response_headers_to_add: headers_to_add(&policies.response_headers),
        response_headers_to_remove: policies.response_headers.remove.clone(),
        ..Default::default()
    }
}

/// The fault filter as the sidecar's outbound connection manager carries it: with no delay and
/// no abort it does nothing until a route overrides it.
pub(crate) fn fault_filter() -> HttpFilter {
    http_filter(FAULT_FILTER, pack_any(HttpFault::default()))
}

// === matches ===

pub(crate) fn route_match(m: &ir::RouteMatch) -> RouteMatch {
    let path = match &m.path {
        ir::PathMatch::Prefix(prefix) => PathSpecifier::Prefix(prefix.clone()),
        ir::PathMatch::Exact(path) => PathSpecifier::Path(path.clone()),
        // Envoy ignores `case_sensitive` for regexes, so ask RE2 itself.
        ir::PathMatch::Regex(regex) if m.ignore_case => {
            PathSpecifier::SafeRegex(regex_matcher(&format!("(?i){regex}")))
        }
        ir::PathMatch::Regex(regex) => PathSpecifier::SafeRegex(regex_matcher(regex)),
    };
    let mut headers: Vec<HeaderMatcher> = m.headers.iter().map(header_matcher).collect();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(exact(method))),
            ..Default::default()
        });
    }
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters: m.query_params.iter().map(query_matcher).collect(),
        ..Default::default()
    }
}

pub(crate) fn header_matcher(h: &ir::HeaderMatch) -> HeaderMatcher {
    HeaderMatcher {
        invert_match: h.invert,
        ..header_value_matcher(&h.name, &h.value)
    }
}

/// A header's value, as a route match or an authorization rule checks it.
pub(crate) fn header_value_matcher(name: &str, value: &ir::ValueMatch) -> HeaderMatcher {
    let specifier = match value {
        ir::ValueMatch::Present => HeaderMatchSpecifier::PresentMatch(true),
        value => HeaderMatchSpecifier::StringMatch(string_matcher(value)),
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn query_matcher(q: &ir::QueryParamMatch) -> QueryParameterMatcher {
    let specifier = match &q.value {
        ir::ValueMatch::Present => QueryParameterMatchSpecifier::PresentMatch(true),
        value => QueryParameterMatchSpecifier::StringMatch(string_matcher(value)),
    };
    QueryParameterMatcher {
        name: q.name.clone(),
        query_parameter_match_specifier: Some(specifier),
    }
}

/// Callers handle `Present` themselves; it has no string form.
fn string_matcher(value: &ir::ValueMatch) -> StringMatcher {
    match value {
        ir::ValueMatch::Exact(text) => exact(text),
        ir::ValueMatch::Regex(regex) => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex_matcher(regex))),
            ignore_case: false,
        },
        ir::ValueMatch::Present => StringMatcher {
            match_pattern: Some(MatchPattern::SafeRegex(regex_matcher(".*"))),
            ignore_case: false,
        },
    }
}

pub(crate) fn exact(text: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(text.to_string())),
        ignore_case: false,
    }
}

/// No engine type: RE2 is Envoy's default and the explicit `google_re2` field is deprecated.
pub(crate) fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

// === actions ===

fn action(action: &ir::RouteAction) -> Action {
    match action {
        ir::RouteAction::Forward(forward) => Action::Route(forward_action(forward)),
        ir::RouteAction::DirectResponse { status, body } => Action::DirectResponse(DirectResponseAction {
            status: *status,
            body: (!body.is_empty()).then(|| DataSource {
                specifier: Some(data_source::Specifier::InlineString(body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ir::RouteAction::Redirect { host, path, status } => Action::Redirect(RedirectAction {
            host_redirect: host.clone().unwrap_or_default(),
            path_rewrite_specifier: path.clone().map(PathRewriteSpecifier::PathRedirect),
            response_code: redirect_code(*status) as i32,
            ..Default::default()
        }),
    }
}

fn forward_action(forward: &ir::Forward) -> RouteAction {
    let clusters = forward
        .destinations
        .iter()
        .map(|dest| ClusterWeight {
            name: dest.upstream.clone(),
            weight: Some(UInt32Value { value: dest.weight }),
            ..Default::default()
        })
        .collect();
    RouteAction {
        cluster_specifier: Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        })),
        prefix_rewrite: forward.path_rewrite.clone().unwrap_or_default(),
        host_rewrite_specifier: forward
            .host_rewrite
            .clone()
            .map(HostRewriteSpecifier::HostRewriteLiteral),
        ..Default::default()
    }
}

// === policies ===

fn retry_policy(retry: &policy::Retry) -> RetryPolicy {
    RetryPolicy {
        retry_on: retry.retry_on.clone(),
        num_retries: Some(UInt32Value { value: retry.attempts }),
        per_try_timeout: retry.per_try_timeout_ms.map(duration_ms),
        ..Default::default()
    }
}

fn http_fault(fault: &policy::Fault) -> HttpFault {
    HttpFault {
        delay: fault.delay.as_ref().map(|delay| FaultDelay {
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration_ms(delay.fixed_delay_ms))),
            percentage: Some(per_million(delay.per_million)),
        }),
        abort: fault.abort.as_ref().map(|abort| FaultAbort {
            error_type: Some(ErrorType::HttpStatus(abort.http_status)),
            percentage: Some(per_million(abort.per_million)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn per_million(numerator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator,
        denominator: DenominatorType::Million as i32,
    }
}

fn headers_to_add(headers: &policy::Headers) -> Vec<HeaderValueOption> {
    headers
        .add
        .iter()
        .map(|h| HeaderValueOption {
            header: Some(HeaderValue {
                key: h.name.clone(),
                value: h.value.clone(),
                ..Default::default()
            }),
            append_action: if h.append {
                HeaderAppendAction::AppendIfExistsOrAdd
            } else {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            } as i32,
            ..Default::default()
        })
        .collect()
}

/// Envoy only knows five redirect codes; anything else gets its default, 301.
fn redirect_code(status: u32) -> RedirectResponseCode {
    match status {
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::MovedPermanently,
    }
}

#[cfg(test)]
mod tests;
