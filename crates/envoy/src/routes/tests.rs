use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::PathRewriteSpecifier, route::Action, route_action::ClusterSpecifier,
    route_action::HostRewriteSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort::ErrorType};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::Duration;
use trellis_model::ir::{self, Forward, HeaderMatch, PathMatch, QueryParamMatch, RouteAction, RouteMatch, ValueMatch};
use trellis_model::policy;

use super::route;
use crate::testing::{mk_forward, unpack};

fn mk_route(matcher: RouteMatch, action: RouteAction) -> ir::Route {
    ir::Route {
        name: "default/reviews/0".to_string(),
        matcher,
        action,
        policies: Default::default(),
    }
}

fn forward_of(r: &ir::Route) -> envoy_types::pb::envoy::config::route::v3::RouteAction {
    match route(r).action {
        Some(Action::Route(action)) => action,
        other => panic!("expected a route action, got {other:?}"),
    }
}

#[test]
fn single_destination_still_uses_weighted_clusters_without_headers() {
    let r = mk_route(RouteMatch::default(), mk_forward(&[("reviews-v1", 1)]));
    let action = forward_of(&r);
    let Some(ClusterSpecifier::WeightedClusters(weighted)) = action.cluster_specifier else {
        panic!("expected weighted clusters");
    };
    let cw = &weighted.clusters[0];
    assert_eq!((cw.name.as_str(), cw.weight.map(|w| w.value)), ("reviews-v1", Some(1)));
    assert!(cw.request_headers_to_add.is_empty());
    assert_eq!(route(&r).name, "default/reviews/0");
}

#[test]
fn each_weighted_destination_keeps_its_weight_and_adds_nothing() {
    let r = mk_route(RouteMatch::default(), mk_forward(&[("a", 90), ("b", 10)]));
    let Some(ClusterSpecifier::WeightedClusters(weighted)) = forward_of(&r).cluster_specifier else {
        panic!("expected weighted clusters");
    };
    let clusters: Vec<_> = weighted
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.weight.map(|w| w.value),
                c.request_headers_to_add.len(),
            )
        })
        .collect();
    assert_eq!(
        clusters,
        [("a".to_string(), Some(90), 0), ("b".to_string(), Some(10), 0)]
    );
}

#[test]
fn rewrites_map_to_prefix_and_host_literal() {
    let action = RouteAction::Forward(Forward {
        path_rewrite: Some("/v2/".to_string()),
        host_rewrite: Some("reviews.internal".to_string()),
        ..match mk_forward(&[("a", 1)]) {
            RouteAction::Forward(f) => f,
            _ => unreachable!(),
        }
    });
    let action = forward_of(&mk_route(RouteMatch::default(), action));
    assert_eq!(action.prefix_rewrite, "/v2/");
    assert_eq!(
        action.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral("reviews.internal".to_string()))
    );
}

#[test]
fn matches_convert_path_headers_query_and_method() {
    let matcher = RouteMatch {
        path: PathMatch::Regex("/api/.*".to_string()),
        ignore_case: true,
        headers: vec![
            HeaderMatch {
                name: "x-user".into(),
                value: ValueMatch::Exact("jason".into()),
                invert: true,
            },
            HeaderMatch {
                name: "x-debug".into(),
                value: ValueMatch::Present,
                invert: false,
            },
        ],
        query_params: vec![QueryParamMatch {
            name: "v".into(),
            value: ValueMatch::Regex("[0-9]+".into()),
        }],
        method: Some("GET".to_string()),
    };
    let m = route(&mk_route(matcher, mk_forward(&[("a", 1)])))
        .r#match
        .expect("match");
    match m.path_specifier {
        Some(PathSpecifier::SafeRegex(re)) => assert_eq!(re.regex, "(?i)/api/.*"),
        other => panic!("expected a regex, got {other:?}"),
    }
    assert_eq!(m.case_sensitive.map(|b| b.value), Some(false));
    assert!(m.headers[0].invert_match);
    assert_eq!(
        m.headers[0].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(crate::routes::exact("jason")))
    );
    assert_eq!(
        m.headers[1].header_match_specifier,
        Some(HeaderMatchSpecifier::PresentMatch(true))
    );
    assert_eq!(m.headers[2].name, ":method");
    match &m.query_parameters[0].query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            assert!(matches!(&s.match_pattern, Some(MatchPattern::SafeRegex(re)) if re.regex == "[0-9]+"))
        }
        other => panic!("expected a regex, got {other:?}"),
    }
}

#[test]
fn exact_and_prefix_paths_keep_case_sensitivity_unset() {
    let exact = RouteMatch {
        path: PathMatch::Exact("/a".into()),
        ..RouteMatch::default()
    };
    let m = route(&mk_route(exact, mk_forward(&[("a", 1)]))).r#match.expect("match");
    assert_eq!(m.path_specifier, Some(PathSpecifier::Path("/a".into())));
    assert_eq!(m.case_sensitive, None);
}

#[test]
fn direct_response_and_redirect_convert() {
    let direct = RouteAction::DirectResponse {
        status: 503,
        body: "down".to_string(),
    };
    match route(&mk_route(RouteMatch::default(), direct)).action {
        Some(Action::DirectResponse(d)) => {
            assert_eq!(d.status, 503);
            assert!(format!("{:?}", d.body).contains("down"));
        }
        other => panic!("expected a direct response, got {other:?}"),
    }
    for (status, code) in [(301, 0), (302, 1), (303, 2), (307, 3), (308, 4)] {
        let redirect = RouteAction::Redirect {
            host: Some("new.example".into()),
            path: Some("/new".into()),
            status,
        };
        match route(&mk_route(RouteMatch::default(), redirect)).action {
            Some(Action::Redirect(r)) => {
                assert_eq!(r.response_code, code, "status {status}");
                assert_eq!(r.host_redirect, "new.example");
                assert_eq!(
                    r.path_rewrite_specifier,
                    Some(PathRewriteSpecifier::PathRedirect("/new".into()))
                );
            }
            other => panic!("expected a redirect, got {other:?}"),
        }
    }
}

// === policies ===

fn mk_headers(prefix: &str) -> policy::Headers {
    policy::Headers {
        add: vec![
            policy::HeaderValue {
                name: format!("x-{prefix}-set"),
                value: "1".into(),
                append: false,
            },
            policy::HeaderValue {
                name: format!("x-{prefix}-add"),
                value: "2".into(),
                append: true,
            },
        ],
        remove: vec![format!("x-{prefix}-gone")],
    }
}

fn mk_fault() -> policy::Fault {
    policy::Fault {
        delay: Some(policy::FaultDelay {
            fixed_delay_ms: 1500,
            per_million: 250_000,
        }),
        abort: Some(policy::FaultAbort {
            http_status: 503,
            per_million: 1_000,
        }),
    }
}

fn with_policies(action: RouteAction, policies: policy::RoutePolicies) -> ir::Route {
    ir::Route {
        policies,
        ..mk_route(RouteMatch::default(), action)
    }
}

/// `(name, value, append_action)` of each header to add.
fn added(headers: &[HeaderValueOption]) -> Vec<(String, String, HeaderAppendAction)> {
    headers
        .iter()
        .map(|h| {
            let header = h.header.as_ref().expect("a header");
            let action = HeaderAppendAction::try_from(h.append_action).expect("known action");
            (header.key.clone(), header.value.clone(), action)
        })
        .collect()
}

#[test]
fn retry_and_timeout_go_on_the_forward_action() {
    let policies = policy::RoutePolicies {
        retry: Some(policy::Retry {
            attempts: 3,
            per_try_timeout_ms: Some(250),
            retry_on: "5xx,connect-failure".into(),
        }),
        timeout_ms: Some(2_500),
        ..Default::default()
    };
    let action = forward_of(&with_policies(mk_forward(&[("a", 1)]), policies));
    let retry = action.retry_policy.expect("a retry policy");
    assert_eq!(retry.retry_on, "5xx,connect-failure");
    assert_eq!(retry.num_retries.map(|n| n.value), Some(3));
    assert_eq!(
        retry.per_try_timeout,
        Some(Duration {
            seconds: 0,
            nanos: 250_000_000
        })
    );
    assert_eq!(
        action.timeout,
        Some(Duration {
            seconds: 2,
            nanos: 500_000_000
        })
    );
}

#[test]
fn a_route_without_policies_has_no_retry_timeout_fault_or_headers() {
    let r = route(&mk_route(RouteMatch::default(), mk_forward(&[("a", 1)])));
    let Some(Action::Route(action)) = &r.action else {
        panic!("expected a route action");
    };
    assert_eq!((&action.retry_policy, &action.timeout), (&None, &None));
    assert!(r.typed_per_filter_config.is_empty());
    assert!(r.request_headers_to_add.is_empty() && r.request_headers_to_remove.is_empty());
    assert!(r.response_headers_to_add.is_empty() && r.response_headers_to_remove.is_empty());
}

#[test]
fn fault_overrides_the_fault_filter_for_the_route_in_millionths() {
    let policies = policy::RoutePolicies {
        fault: Some(mk_fault()),
        ..Default::default()
    };
    let r = route(&with_policies(mk_forward(&[("a", 1)]), policies));
    assert_eq!(r.typed_per_filter_config.len(), 1);
    let fault: HttpFault = unpack(&r.typed_per_filter_config["envoy.filters.http.fault"]);
    let million = |numerator| {
        Some(FractionalPercent {
            numerator,
            denominator: DenominatorType::Million as i32,
        })
    };
    let delay = fault.delay.expect("a delay");
    assert_eq!(
        delay.fault_delay_secifier,
        Some(FaultDelaySecifier::FixedDelay(Duration {
            seconds: 1,
            nanos: 500_000_000
        }))
    );
    assert_eq!(delay.percentage, million(250_000));
    let abort = fault.abort.expect("an abort");
    assert_eq!(abort.error_type, Some(ErrorType::HttpStatus(503)));
    assert_eq!(abort.percentage, million(1_000));
}

#[test]
fn a_fault_with_only_a_delay_aborts_nothing() {
    let policies = policy::RoutePolicies {
        fault: Some(policy::Fault {
            abort: None,
            ..mk_fault()
        }),
        ..Default::default()
    };
    let r = route(&with_policies(mk_forward(&[("a", 1)]), policies));
    let fault: HttpFault = unpack(&r.typed_per_filter_config["envoy.filters.http.fault"]);
    assert!(fault.delay.is_some() && fault.abort.is_none());
}

#[test]
fn header_edits_overwrite_or_append_and_remove_on_requests_and_responses() {
    let policies = policy::RoutePolicies {
        request_headers: mk_headers("req"),
        response_headers: mk_headers("resp"),
        ..Default::default()
    };
    let r = route(&with_policies(mk_forward(&[("a", 1)]), policies));
    let expected = |p: &str| {
        vec![
            (
                format!("x-{p}-set"),
                "1".to_string(),
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            ),
            (
                format!("x-{p}-add"),
                "2".to_string(),
                HeaderAppendAction::AppendIfExistsOrAdd,
            ),
        ]
    };
    assert_eq!(added(&r.request_headers_to_add), expected("req"));
    assert_eq!(r.request_headers_to_remove, ["x-req-gone"]);
    assert_eq!(added(&r.response_headers_to_add), expected("resp"));
    assert_eq!(r.response_headers_to_remove, ["x-resp-gone"]);
}

#[test]
fn direct_responses_take_headers_and_faults_but_no_retries() {
    let policies = policy::RoutePolicies {
        retry: Some(policy::Retry {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: "5xx".into(),
        }),
        timeout_ms: Some(1_000),
        fault: Some(mk_fault()),
        response_headers: mk_headers("resp"),
        ..Default::default()
    };
    let direct = RouteAction::DirectResponse {
        status: 503,
        body: String::new(),
    };
    let r = route(&with_policies(direct, policies));
    assert!(matches!(r.action, Some(Action::DirectResponse(_))));
    assert_eq!(r.response_headers_to_add.len(), 2);
    assert!(r.typed_per_filter_config.contains_key("envoy.filters.http.fault"));
}

#[test]
fn the_fault_filter_the_connection_manager_carries_is_empty() {
    let filter = super::fault_filter();
    assert_eq!(filter.name, "envoy.filters.http.fault");
    let Some(http_filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("the fault filter needs a typed config");
    };
    assert_eq!(unpack::<HttpFault>(any), HttpFault::default());
}
