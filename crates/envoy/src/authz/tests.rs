use envoy_types::pb::envoy::config::rbac::v3::Rbac as RbacConfig;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use trellis_model::Workload;

use super::*;
use crate::testing::{mk_workload, typed, unpack};

fn mk_policy(name: &str, rules: Vec<AuthzRule>, dry_run: bool) -> InboundPolicy {
    InboundPolicy {
        name: name.to_string(),
        rules: Some(rules),
        dry_run,
        ..Default::default()
    }
}

fn principals(ids: &[&str]) -> AuthzRule {
    AuthzRule {
        principals: ids.iter().map(|id| id.to_string()).collect(),
        ..Default::default()
    }
}

/// The RBAC config the policies put on an inbound HTTP port's routes.
fn http_config(policies: &[InboundPolicy]) -> Option<HttpRbacProto> {
    let refs: Vec<_> = policies.iter().collect();
    let (filter, any) = http_rbac_per_route(&refs)?;
    assert_eq!(filter, "envoy.filters.http.rbac");
    let per_route: HttpRbacPerRouteProto = unpack(&any);
    Some(per_route.rbac.expect("per-route RBAC carries a config"))
}

#[test]
fn the_listeners_rbac_filter_has_no_rules_of_its_own() {
    let filter = http_rbac_filter();
    assert_eq!(filter.name, "envoy.filters.http.rbac");
    let config: HttpRbacProto = match &filter.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => unpack(any),
        other => panic!("RBAC without a typed config: {other:?}"),
    };
    assert!(config.rules.is_none() && config.shadow_rules.is_none());
    assert_eq!(config.shadow_rules_stat_prefix, RBAC_DRY_RUN_STAT_PREFIX);
}

fn tcp_config(policies: &[InboundPolicy]) -> Option<NetworkRbacProto> {
    let refs: Vec<_> = policies.iter().collect();
    let filter = network_rbac(&refs, "inbound|5432")?;
    assert_eq!(filter.name, "envoy.filters.network.rbac");
    Some(typed(&filter))
}

fn names(rules: &Option<RbacConfig>) -> Vec<String> {
    let rules = rules.as_ref().expect("a rule set");
    assert_eq!(rules.action, RbacAction::Allow as i32);
    let mut names: Vec<_> = rules.policies.keys().cloned().collect();
    names.sort();
    names
}

fn only_policy(config: &HttpRbacProto) -> Policy {
    let policies = &config.rules.as_ref().expect("rules").policies;
    assert_eq!(policies.len(), 1);
    policies.values().next().expect("one policy").clone()
}

fn principal_of(policy: &Policy) -> principal::Identifier {
    assert_eq!(policy.principals.len(), 1);
    policy.principals[0].identifier.clone().expect("an identifier")
}

fn authenticated_as(name: Option<MatchPattern>) -> principal::Identifier {
    principal::Identifier::Authenticated(principal::Authenticated {
        principal_name: name.map(|pattern| StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        }),
    })
}

// === selection ===

#[test]
fn policies_select_workloads_by_namespace_service_and_every_label() {
    let mut workload: Workload = mk_workload();
    workload.labels = [("app", "reviews"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let cases = [
        ("everyone", "", "", labels(&[]), true),
        ("same-namespace", "default", "", labels(&[]), true),
        ("other-namespace", "other", "", labels(&[]), false),
        ("same-service", "default", "reviews", labels(&[]), true),
        ("other-service", "", "ratings", labels(&[]), false),
        ("one-label", "", "", labels(&[("app", "reviews")]), true),
        (
            "all-labels",
            "",
            "",
            labels(&[("app", "reviews"), ("version", "v1")]),
            true,
        ),
        ("wrong-value", "", "", labels(&[("version", "v2")]), false),
        (
            "missing-label",
            "",
            "",
            labels(&[("app", "reviews"), ("tier", "db")]),
            false,
        ),
    ];
    let policies: Vec<_> = cases
        .iter()
        .map(|(name, namespace, service, labels, _)| InboundPolicy {
            name: name.to_string(),
            namespace: namespace.to_string(),
            service: service.to_string(),
            labels: labels.clone(),
            ..Default::default()
        })
        .collect();
    let selected: Vec<_> = applying(&policies, &workload).iter().map(|p| p.name.as_str()).collect();
    let expected: Vec<_> = cases.iter().filter(|c| c.4).map(|c| c.0).collect();
    assert_eq!(selected, expected);
}

#[test]
fn tls_mode_defaults_to_strict_and_the_first_policy_that_sets_one_wins() {
    assert_eq!(tls_mode(&[]), TlsMode::Strict);
    let none = InboundPolicy::default();
    let disable = InboundPolicy {
        tls_mode: Some(TlsMode::Disable),
        ..Default::default()
    };
    let permissive = InboundPolicy {
        tls_mode: Some(TlsMode::Permissive),
        ..Default::default()
    };
    assert_eq!(tls_mode(&[&none]), TlsMode::Strict);
    assert_eq!(tls_mode(&[&none, &disable, &permissive]), TlsMode::Disable);
    assert_eq!(tls_mode(&[&permissive, &disable]), TlsMode::Permissive);
}

// === rules and shadow rules ===

#[test]
fn no_rbac_filter_without_rules() {
    let modes_only = InboundPolicy {
        tls_mode: Some(TlsMode::Permissive),
        ..Default::default()
    };
    assert!(http_config(std::slice::from_ref(&modes_only)).is_none());
    assert!(tcp_config(&[modes_only]).is_none());
}

#[test]
fn enforced_policies_become_rules_named_per_rule_and_dry_runs_become_shadow_rules() {
    let policies = [
        mk_policy(
            "demo/allow-frontend",
            vec![principals(&["a"]), principals(&["b"])],
            false,
        ),
        mk_policy("demo/audit", vec![principals(&["c"])], true),
        mk_policy("demo/allow-ops", vec![principals(&["d"])], false),
    ];
    let config = http_config(&policies).expect("an RBAC filter");
    assert_eq!(
        names(&config.rules),
        ["demo/allow-frontend/0", "demo/allow-frontend/1", "demo/allow-ops/0"]
    );
    assert_eq!(names(&config.shadow_rules), ["demo/audit/0"]);
    assert_eq!(config.shadow_rules_stat_prefix, "trellis_dry_run_");
}

#[test]
fn only_dry_runs_leave_enforcement_off() {
    let config = http_config(&[mk_policy("demo/audit", vec![principals(&["c"])], true)]).expect("a filter");
    assert_eq!(config.rules, None, "absent rules allow everything");
    assert_eq!(names(&config.shadow_rules), ["demo/audit/0"]);
}

#[test]
fn only_enforced_policies_have_no_shadow_rules_or_prefix() {
    let config = http_config(&[mk_policy("demo/a", vec![principals(&["a"])], false)]).expect("a filter");
    assert_eq!(config.shadow_rules, None);
    assert_eq!(config.shadow_rules_stat_prefix, "");
}

#[test]
fn an_enforced_empty_rule_list_denies_everything() {
    let config = http_config(&[mk_policy("demo/deny-all", Vec::new(), false)]).expect("a filter");
    assert_eq!(names(&config.rules), Vec::<String>::new());
}

// === rule conversion ===

#[test]
fn an_empty_rule_allows_anyone_anything() {
    let config = http_config(&[mk_policy("demo/open", vec![AuthzRule::default()], false)]).expect("a filter");
    let policy = only_policy(&config);
    assert_eq!(
        policy.permissions,
        [Permission {
            rule: Some(permission::Rule::Any(true))
        }]
    );
    assert_eq!(principal_of(&policy), principal::Identifier::Any(true));
}

#[test]
fn principals_match_exactly_or_by_prefix_when_they_end_in_a_star_or_slash() {
    let rule = principals(&[
        "spiffe://td/ns/demo/sa/web",
        "spiffe://td/ns/demo/sa/*",
        "spiffe://td/ns/ops/",
        "*",
    ]);
    let config = http_config(&[mk_policy("demo/ids", vec![rule], false)]).expect("a filter");
    let principal::Identifier::OrIds(set) = principal_of(&only_policy(&config)) else {
        panic!("expected any of the identities");
    };
    let ids: Vec<_> = set
        .ids
        .into_iter()
        .map(|p| p.identifier.expect("an identifier"))
        .collect();
    assert_eq!(
        ids,
        [
            authenticated_as(Some(MatchPattern::Exact("spiffe://td/ns/demo/sa/web".into()))),
            authenticated_as(Some(MatchPattern::Prefix("spiffe://td/ns/demo/sa/".into()))),
            authenticated_as(Some(MatchPattern::Prefix("spiffe://td/ns/ops/".into()))),
            authenticated_as(None),
        ]
    );
}

#[test]
fn ip_blocks_are_anded_with_the_principals() {
    let rule = AuthzRule {
        principals: vec!["spiffe://td/ns/demo/sa/web".into()],
        ip_blocks: vec!["10.0.0.0/8".into(), "192.168.1.7".into(), "fd00::/8".into()],
        ..Default::default()
    };
    let config = http_config(&[mk_policy("demo/ip", vec![rule], false)]).expect("a filter");
    let principal::Identifier::AndIds(and) = principal_of(&only_policy(&config)) else {
        panic!("expected identity and address");
    };
    assert_eq!(
        and.ids[0].identifier,
        Some(authenticated_as(Some(MatchPattern::Exact(
            "spiffe://td/ns/demo/sa/web".into()
        ))))
    );
    let Some(principal::Identifier::OrIds(ips)) = &and.ids[1].identifier else {
        panic!("expected any of the blocks");
    };
    let ranges: Vec<_> = ips
        .ids
        .iter()
        .map(|p| match &p.identifier {
            Some(principal::Identifier::DirectRemoteIp(range)) => (
                range.address_prefix.clone(),
                range.prefix_len.map(|l| l.value).unwrap_or_default(),
            ),
            other => panic!("expected a direct remote IP, got {other:?}"),
        })
        .collect();
    assert_eq!(
        ranges,
        [
            ("10.0.0.0".to_string(), 8),
            ("192.168.1.7".to_string(), 32),
            ("fd00::".to_string(), 8)
        ]
    );
}

#[test]
fn permissions_and_together_any_path_any_method_and_every_header() {
    let rule = AuthzRule {
        paths: vec![
            PathMatch::Prefix("/api/".into()),
            PathMatch::Exact("/login".into()),
            PathMatch::Regex("/v[0-9]+".into()),
        ],
        methods: vec!["GET".into(), "POST".into()],
        headers: vec![
            ("x-tenant".into(), ValueMatch::Exact("a".into())),
            ("x-debug".into(), ValueMatch::Present),
        ],
        ..Default::default()
    };
    let config = http_config(&[mk_policy("demo/http", vec![rule], false)]).expect("a filter");
    let policy = only_policy(&config);
    assert_eq!(principal_of(&policy), principal::Identifier::Any(true));
    let Some(permission::Rule::AndRules(and)) = &policy.permissions[0].rule else {
        panic!("expected all parts");
    };
    let [paths, methods, tenant, debug] = and.rules.as_slice() else {
        panic!("expected paths, methods and two headers, got {:?}", and.rules);
    };
    let path = |pattern| Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            })),
        })),
    };
    assert_eq!(
        paths.rule,
        Some(permission::Rule::OrRules(permission::Set {
            rules: vec![
                path(MatchPattern::Prefix("/api/".into())),
                path(MatchPattern::Exact("/login".into())),
                path(MatchPattern::SafeRegex(regex_matcher("/v[0-9]+"))),
            ]
        }))
    );
    let header = |name: &str, value: ValueMatch| Permission {
        rule: Some(permission::Rule::Header(header_value_matcher(name, &value))),
    };
    assert_eq!(
        methods.rule,
        Some(permission::Rule::OrRules(permission::Set {
            rules: vec![
                header(":method", ValueMatch::Exact("GET".into())),
                header(":method", ValueMatch::Exact("POST".into())),
            ]
        }))
    );
    assert_eq!(tenant, &header("x-tenant", ValueMatch::Exact("a".into())));
    assert_eq!(debug, &header("x-debug", ValueMatch::Present));
}

#[test]
fn not_headers_are_negated_header_matches_beside_the_allowed_values() {
    let rule = AuthzRule {
        headers: vec![("x-test".into(), ValueMatch::Regex("^(match|partial.*)$".into()))],
        not_headers: vec![("x-test".into(), ValueMatch::Regex("^(partial-blocked)$".into()))],
        ..Default::default()
    };
    let config = http_config(&[mk_policy("demo/headers", vec![rule], false)]).expect("a filter");
    let header = |value: &str| Permission {
        rule: Some(permission::Rule::Header(header_value_matcher(
            "x-test",
            &ValueMatch::Regex(value.into()),
        ))),
    };
    assert_eq!(
        only_policy(&config).permissions[0].rule,
        Some(permission::Rule::AndRules(permission::Set {
            rules: vec![
                header("^(match|partial.*)$"),
                Permission {
                    rule: Some(permission::Rule::NotRule(Box::new(header("^(partial-blocked)$")))),
                },
            ]
        }))
    );
    // Header conditions need HTTP: a TCP listener drops the rule.
    let only_not = AuthzRule {
        not_headers: vec![("x-test".into(), ValueMatch::Exact("no".into()))],
        ..Default::default()
    };
    let config = tcp_config(&[mk_policy("demo/headers", vec![only_not], false)]).expect("a filter");
    assert_eq!(names(&config.rules), Vec::<String>::new());
}

#[test]
fn a_single_path_is_not_wrapped() {
    let rule = AuthzRule {
        paths: vec![PathMatch::Prefix("/health".into())],
        ..Default::default()
    };
    let config = http_config(&[mk_policy("demo/health", vec![rule], false)]).expect("a filter");
    assert!(matches!(
        only_policy(&config).permissions[0].rule,
        Some(permission::Rule::UrlPath(_))
    ));
}

// === TCP ===

#[test]
fn tcp_keeps_a_rules_peer_and_drops_rules_with_only_http_parts() {
    let with_peer = AuthzRule {
        paths: vec![PathMatch::Prefix("/api/".into())],
        ..principals(&["spiffe://td/ns/demo/sa/web"])
    };
    let http_only = AuthzRule {
        methods: vec!["GET".into()],
        ..Default::default()
    };
    let by_ip = AuthzRule {
        ip_blocks: vec!["10.0.0.0/8".into()],
        ..Default::default()
    };
    let config = tcp_config(&[mk_policy("demo/db", vec![with_peer, http_only, by_ip], false)]).expect("a filter");
    assert_eq!(config.stat_prefix, "inbound|5432");
    assert_eq!(names(&config.rules), ["demo/db/0", "demo/db/2"]);
    let rules = config.rules.expect("rules");
    let with_peer = &rules.policies["demo/db/0"];
    assert_eq!(
        with_peer.permissions,
        [Permission {
            rule: Some(permission::Rule::Any(true))
        }]
    );
    assert_eq!(
        principal_of(with_peer),
        authenticated_as(Some(MatchPattern::Exact("spiffe://td/ns/demo/sa/web".into())))
    );
}

#[test]
fn a_tcp_policy_whose_rules_are_all_http_denies_everything() {
    let http_only = AuthzRule {
        paths: vec![PathMatch::Prefix("/".into())],
        ..Default::default()
    };
    let config = tcp_config(&[mk_policy("demo/web", vec![http_only], false)]).expect("a filter");
    assert_eq!(names(&config.rules), Vec::<String>::new());
}

#[test]
fn tcp_dry_runs_are_shadow_rules_with_the_stat_prefix() {
    let config = tcp_config(&[mk_policy("demo/audit", vec![principals(&["x"])], true)]).expect("a filter");
    assert_eq!(config.rules, None);
    assert_eq!(names(&config.shadow_rules), ["demo/audit/0"]);
    assert_eq!(config.shadow_rules_stat_prefix, RBAC_DRY_RUN_STAT_PREFIX);
}

// === encoding ===

/// prost would write a `HashMap` of policies in a random order: equal inputs must give equal
/// bytes, with the policies in name order.
#[test]
fn policies_are_encoded_in_name_order() {
    let rules: Vec<_> = (0..12).map(|i| principals(&[&format!("spiffe://td/sa/{i}")])).collect();
    let policies = [mk_policy("demo/many", rules, false)];
    let refs: Vec<_> = policies.iter().collect();
    let bytes = |config: Option<(String, Any)>| config.expect("a config").1.value;
    let first = bytes(http_rbac_per_route(&refs));
    for _ in 0..5 {
        assert_eq!(bytes(http_rbac_per_route(&refs)), first);
    }
    let mut names: Vec<_> = (0..12).map(|i| format!("demo/many/{i}")).collect();
    names.sort();
    let positions: Vec<_> = names
        .iter()
        .map(|name| {
            first
                .windows(name.len())
                .position(|w| w == name.as_bytes())
                .expect("name encoded")
        })
        .collect();
    assert!(positions.is_sorted(), "{names:?} at {positions:?}");
}
