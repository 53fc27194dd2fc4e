use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::PathRewriteSpecifier, route::Action, route_action::ClusterSpecifier,
    route_action::HostRewriteSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use trellis_model::ir::{self, Forward, HeaderMatch, PathMatch, QueryParamMatch, RouteAction, RouteMatch, ValueMatch};

use super::route;
use crate::testing::mk_forward;

fn mk_route(matcher: RouteMatch, action: RouteAction) -> ir::Route {
    ir::Route {
        name: "default/reviews/0".to_string(),
        matcher,
        action,
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
