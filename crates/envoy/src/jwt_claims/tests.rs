//! The RBAC a route's claim and scope rules become.

use envoy_types::pb::envoy::config::rbac::v3::{Principal, principal};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern as StringPattern, value_matcher::MatchPattern,
};
use prost::Message;
use trellis_model::policy::{ClaimRule, JwtProvider, JwtRequirement};

use super::*;

fn requirement(claims: Vec<ClaimRule>, scopes: &[&str]) -> JwtRequirement {
    JwtRequirement {
        name: "team/jwt".into(),
        providers: ["team/jwt/a", "team/jwt/b"]
            .iter()
            .map(|name| JwtProvider {
                name: name.to_string(),
                ..Default::default()
            })
            .collect(),
        claims,
        required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn principal_of(config: &(String, Any)) -> Principal {
    assert_eq!(config.0, "envoy.filters.http.rbac");
    let decoded = RbacPerRoute::decode(&config.1.value[..]).unwrap();
    let rules = decoded.rbac.unwrap().rules.unwrap();
    assert_eq!(rules.policies.len(), 1);
    rules.policies.into_values().next().unwrap().principals.remove(0)
}

/// Every metadata matcher under `p`: (path, string pattern or other value kind).
fn leaves(p: &Principal, out: &mut Vec<(Vec<String>, String)>, negated: bool) {
    match p.identifier.as_ref().unwrap() {
        principal::Identifier::OrIds(set) | principal::Identifier::AndIds(set) => {
            set.ids.iter().for_each(|id| leaves(id, out, negated))
        }
        principal::Identifier::NotId(inner) => leaves(inner, out, !negated),
        principal::Identifier::SourcedMetadata(sourced) => {
            let m = sourced.metadata_matcher.as_ref().unwrap();
            assert_eq!(m.filter, "envoy.filters.http.jwt_authn");
            let path = m
                .path
                .iter()
                .map(|s| match s.segment.as_ref().unwrap() {
                    Segment::Key(k) => k.clone(),
                })
                .collect();
            let value = match m.value.as_ref().unwrap().match_pattern.as_ref().unwrap() {
                MatchPattern::StringMatch(s) => format!("{:?}", s.match_pattern.as_ref().unwrap()),
                MatchPattern::PresentMatch(_) => "present".into(),
                MatchPattern::ListMatch(_) => "in list".into(),
                MatchPattern::BoolMatch(b) => format!("bool {b}"),
                MatchPattern::DoubleMatch(_) => "number".into(),
                other => format!("{other:?}"),
            };
            out.push((path, if negated { format!("not {value}") } else { value }));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_route_without_claims_or_scopes_gets_no_rbac() {
    assert!(route_config(&requirement(Vec::new(), &[])).is_none());
}

#[test]
fn claims_read_each_providers_payload_with_wildcards_and_not_values() {
    let rules = vec![ClaimRule {
        path: vec!["email".into()],
        values: vec!["*@solo.io".into(), "admin-*".into()],
        not_values: vec!["root@solo.io".into()],
    }];
    let principal = principal_of(&route_config(&requirement(rules, &[])).unwrap());
    let mut found = Vec::new();
    leaves(&principal, &mut found, false);
    for provider in ["team/jwt/a", "team/jwt/b"] {
        let path = vec![provider.to_string(), "email".to_string()];
        let at = |value: &str| found.contains(&(path.clone(), value.to_string()));
        assert!(
            at(&format!("{:?}", StringPattern::Suffix("@solo.io".into()))),
            "{found:?}"
        );
        assert!(
            at(&format!("{:?}", StringPattern::Prefix("admin-".into()))),
            "{found:?}"
        );
        assert!(
            at(&format!("not {:?}", StringPattern::Exact("root@solo.io".into()))),
            "{found:?}"
        );
        assert!(at("in list"), "a claim holding a list is matched by its elements too");
    }
}

#[test]
fn a_required_scope_is_a_whole_word_of_the_scope_claim() {
    let principal = principal_of(&route_config(&requirement(Vec::new(), &["is:developer"])).unwrap());
    let mut found = Vec::new();
    leaves(&principal, &mut found, false);
    let regex = found
        .iter()
        .find(|(path, value)| path[1] == "scope" && value.contains("SafeRegex"))
        .unwrap();
    assert!(regex.1.contains(r#"(^|.* )is:developer( .*|$)"#), "{regex:?}");
    assert_eq!(escape_regex("a.b*"), r"a\.b\*");
}

#[test]
fn any_value_and_typed_values_match_what_a_payload_holds() {
    let rules = vec![ClaimRule {
        path: vec!["realm".into(), "verified".into()],
        values: vec!["true".into()],
        not_values: Vec::new(),
    }];
    let principal = principal_of(&route_config(&requirement(rules, &[])).unwrap());
    let mut found = Vec::new();
    leaves(&principal, &mut found, false);
    assert!(found.contains(&(
        vec!["team/jwt/a".into(), "realm".into(), "verified".into()],
        "bool true".into()
    )));
    assert_eq!(claim_value("*").len(), 1);
}
