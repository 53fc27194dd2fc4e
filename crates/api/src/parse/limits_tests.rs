//! Refusals of what Envoy would NACK, of duplicate keys and of hostile documents, each through
//! `parse_documents` so the field path a user sees is what is tested.

use super::*;

fn errors_of(text: &str) -> Vec<DocumentError> {
    match parse_documents("limits.yaml", text) {
        Ok(resources) => panic!("expected an error, got {resources:?}"),
        Err(error) => error.errors(),
    }
}

fn assert_refused(text: &str, field: &str, message: &str) {
    let errors = errors_of(text);
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some(field) && e.message.contains(message)),
        "input:\n{text}\nwanted field {field:?} with {message:?}, got {errors:#?}"
    );
}

fn route_table(http: &str) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {{name: rt, namespace: demo}}\nspec:\n  hosts: [backend.mesh.internal]\n  http:\n{http}"
    )
}

fn policy(kind: &str, api_group: &str, config: &str) -> String {
    format!(
        "apiVersion: {api_group}.policy.gloo.solo.io/v2\nkind: {kind}\nmetadata: {{name: p, namespace: demo}}\nspec:\n  config: {config}\n"
    )
}

const FORWARD: &str = "    forwardTo: {destinations: [{ref: {name: backend}}]}\n";

#[test]
fn refuses_the_attackers_route_table_and_timeout() {
    let text = route_table(
        "  - forwardTo:\n      destinations:\n      - {ref: {name: a}, weight: 4294967295}\n      - {ref: {name: b}, weight: 4294967295}\n",
    );
    assert_refused(&text, "spec.http[0].forwardTo.destinations", "add up to 8589934590");
    let text = policy("RetryTimeoutPolicy", "resilience", "{requestTimeout: 99999999999h}");
    assert_refused(
        &text,
        "spec.config.requestTimeout",
        "duration 99999999999h is too large: at most 9223372035.999999999s",
    );
}

#[test]
fn accepts_the_largest_values_envoy_accepts() {
    let texts = [
        route_table(
            "  - forwardTo:\n      destinations:\n      - {ref: {name: a}, weight: 4294967294}\n      - {ref: {name: b}, weight: 1}\n",
        ),
        policy(
            "RetryTimeoutPolicy",
            "resilience",
            "{requestTimeout: 9223372035s, retries: {attempts: 10, perTryTimeout: 9223372035.999s}}",
        ),
        policy(
            "FaultInjectionPolicy",
            "resilience",
            "{delay: {fixedDelay: 1ms, percentage: 100}, abort: {httpStatus: 599, percentage: 0}}",
        ),
        policy(
            "OutlierDetectionPolicy",
            "resilience",
            "{interval: 9223372035s, baseEjectionTime: 1ms, maxEjectionPercent: 100}",
        ),
        policy(
            "HeaderManipulationPolicy",
            "trafficcontrol",
            "{appendRequestHeaders: {x-client: '%DOWNSTREAM_REMOTE_ADDRESS%', x-share: '100%%', x-user: '%REQ(x-user)%'}}",
        ),
        route_table(&format!(
            "  - matchers: [{{uri: {{regex: '/v[0-9]+/.*', ignoreCase: true}}, headers: [{{name: x-id, value: '{}', regex: true}}]}}]\n{FORWARD}  - directResponse: {{status: 200, body: '{}'}}\n",
            "a".repeat(96),
            "b".repeat(4096)
        )),
    ];
    for text in texts {
        if let Err(error) = parse_documents("max.yaml", &text) {
            panic!("input:\n{text}\nrefused: {error}");
        }
    }
}

#[test]
fn refuses_route_fields_envoy_would_nack() {
    let cases = [
        (
            route_table(&format!("  - matchers: [{{uri: {{regex: 'a{{100}}'}}}}]\n{FORWARD}")),
            "spec.http[0].matchers[0].uri.regex",
            "too complex for Envoy",
        ),
        (
            route_table(&format!("  - matchers: [{{uri: {{regex: '(?x)a b'}}}}]\n{FORWARD}")),
            "spec.http[0].matchers[0].uri.regex",
            "the flag 'x' is not supported",
        ),
        (
            route_table(&format!(
                "  - matchers: [{{headers: [{{name: x-a, value: '[a-z&&b]', regex: true}}]}}]\n{FORWARD}"
            )),
            "spec.http[0].matchers[0].headers[0].value",
            "set operation",
        ),
        (
            route_table(&format!(
                "  - matchers: [{{queryParameters: [{{name: q, value: '(', regex: true}}]}}]\n{FORWARD}"
            )),
            "spec.http[0].matchers[0].queryParameters[0].value",
            "invalid regular expression",
        ),
        (
            route_table(&format!(
                "  - matchers: [{{headers: [{{name: \"x\\na\"}}]}}]\n{FORWARD}"
            )),
            "spec.http[0].matchers[0].headers[0].name",
            "NUL, CR or LF",
        ),
        (
            route_table(&format!(
                "  - matchers: [{{queryParameters: [{{name: {}}}]}}]\n{FORWARD}",
                "q".repeat(1025)
            )),
            "spec.http[0].matchers[0].queryParameters[0].name",
            "at most 1024",
        ),
        (
            route_table("  - forwardTo: {destinations: [{ref: {name: b}}], pathRewrite: \"/a\\r\\nb\"}\n"),
            "spec.http[0].forwardTo.pathRewrite",
            "NUL, CR or LF",
        ),
        (
            route_table("  - forwardTo: {destinations: [{ref: {name: b}}], hostRewrite: \"a\\nb\"}\n"),
            "spec.http[0].forwardTo.hostRewrite",
            "NUL, CR or LF",
        ),
        (
            route_table("  - redirect: {pathRedirect: \"/a\\nb\"}\n"),
            "spec.http[0].redirect.pathRedirect",
            "NUL, CR or LF",
        ),
        (
            route_table(&format!(
                "  - directResponse: {{status: 200, body: '{}'}}\n",
                "b".repeat(4097)
            )),
            "spec.http[0].directResponse.body",
            "at most 4096",
        ),
    ];
    for (text, field, message) in cases {
        assert_refused(&text, field, message);
    }
}

#[test]
fn refuses_policy_fields_envoy_would_nack() {
    let cases = [
        (
            policy("RetryTimeoutPolicy", "resilience", "{requestTimeout: -1s}"),
            "spec.config.requestTimeout",
            "negative",
        ),
        (
            policy(
                "RetryTimeoutPolicy",
                "resilience",
                "{retries: {attempts: 1, perTryTimeout: 9223372036s}}",
            ),
            "spec.config.retries.perTryTimeout",
            "too large",
        ),
        (
            policy(
                "FaultInjectionPolicy",
                "resilience",
                "{delay: {fixedDelay: 99999999999999999999999h}}",
            ),
            "spec.config.delay.fixedDelay",
            "too large",
        ),
        (
            policy("FaultInjectionPolicy", "resilience", "{delay: {fixedDelay: 0s}}"),
            "spec.config.delay.fixedDelay",
            "shorter than 1ms",
        ),
        (
            policy(
                "FaultInjectionPolicy",
                "resilience",
                "{abort: {httpStatus: 503, percentage: 100.5}}",
            ),
            "spec.config.abort.percentage",
            "not a percentage",
        ),
        (
            policy("OutlierDetectionPolicy", "resilience", "{baseEjectionTime: 1e30h}"),
            "spec.config.baseEjectionTime",
            "unknown unit",
        ),
        (
            policy("OutlierDetectionPolicy", "resilience", "{interval: 315576000000s}"),
            "spec.config.interval",
            "too large",
        ),
        (
            policy(
                "HeaderManipulationPolicy",
                "trafficcontrol",
                "{appendRequestHeaders: {x-share: '100%'}}",
            ),
            "spec.config.appendRequestHeaders.x-share",
            "write a literal percent sign as %%",
        ),
        (
            policy(
                "HeaderManipulationPolicy",
                "trafficcontrol",
                "{appendResponseHeaders: {x-a: \"a\\r\\nSet-Cookie: x\"}}",
            ),
            "spec.config.appendResponseHeaders.x-a",
            "NUL, CR or LF",
        ),
        (
            policy(
                "HeaderManipulationPolicy",
                "trafficcontrol",
                "{appendRequestHeaders: {':authority': evil}}",
            ),
            "spec.config.appendRequestHeaders.:authority",
            "cannot be changed",
        ),
        (
            policy(
                "HeaderManipulationPolicy",
                "trafficcontrol",
                "{removeResponseHeaders: [ok, Host]}",
            ),
            "spec.config.removeResponseHeaders[1]",
            "cannot be changed",
        ),
        (
            policy(
                "AccessPolicy",
                "security",
                &format!("{{authzList: [{{allowedPaths: ['*{}']}}]}}", "x".repeat(120)),
            ),
            "spec.config.authzList[0].allowedPaths[0]",
            "too complex for Envoy",
        ),
        (
            policy(
                "AccessPolicy",
                "security",
                "{authzList: [{match: {request: {headers: {\"x\\na\": {values: [a]}}}}}]}",
            ),
            "spec.config.authzList[0].match.request.headers.x\na",
            "NUL, CR or LF",
        ),
    ];
    for (text, field, message) in cases {
        assert_refused(&text, field, message);
    }
}

#[test]
fn refuses_add_on_fields_envoy_would_nack() {
    let server = |spec: &str| {
        format!(
            "apiVersion: admin.gloo.solo.io/v2\nkind: ExtAuthServer\nmetadata: {{name: s, namespace: demo}}\nspec: {spec}\n"
        )
    };
    assert_refused(
        &server("{statusOnError: 418}"),
        "spec.statusOnError",
        "not a status Envoy can send",
    );
    assert_refused(
        &server("{requestTimeout: 99999999999h}"),
        "spec.requestTimeout",
        "too large",
    );
    parse_documents("ok.yaml", &server("{statusOnError: 503, requestTimeout: 9223372035s}")).unwrap();
    let settings = "apiVersion: admin.gloo.solo.io/v2\nkind: RateLimitServerSettings\nmetadata: {name: s, namespace: demo}\nspec: {requestTimeout: 9223372036s}\n";
    assert_refused(settings, "spec.requestTimeout", "too large");
    let client = "apiVersion: trafficcontrol.policy.gloo.solo.io/v2\nkind: RateLimitClientConfig\nmetadata: {name: c, namespace: demo}\nspec:\n  raw:\n    rateLimits:\n    - actions:\n      - headerValueMatch: {descriptorValue: v, headers: [{name: x-a, regexMatch: 'a{1001}'}]}\n      - requestHeaders: {headerName: \"x\\ra\", descriptorKey: k}\n";
    assert_refused(
        client,
        "spec.raw.rateLimits[0].actions[0].headerValueMatch.headers[0].regexMatch",
        "repetition count 1001",
    );
    assert_refused(
        client,
        "spec.raw.rateLimits[0].actions[1].requestHeaders.headerName",
        "NUL, CR or LF",
    );
}

#[test]
fn refuses_duplicate_keys_at_any_depth_naming_the_path() {
    let text = "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: rt, namespace: demo}\nspec:\n  hosts: [backend.mesh.internal]\n  http:\n  - forwardTo:\n      destinations:\n      - ref: {name: a}\n        weight: 1\n        weight: 100\n";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].to_string(),
        "limits.yaml: document 1 (RouteTable/demo/rt): field spec.http[0].forwardTo.destinations[0].weight: duplicate key `weight`: give each key once (only the last value would be kept)"
    );
    // At the top, in metadata, in the second document, and in JSON.
    let text = "kind: RouteTable\nkind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a, name: b}\n---\n{\"apiVersion\": \"networking.gloo.solo.io/v2\", \"kind\": \"RouteTable\", \"metadata\": {\"name\": \"j\"}, \"spec\": {\"hosts\": [\"x\"], \"hosts\": [\"y\"]}}\n";
    let found: Vec<_> = errors_of(text)
        .into_iter()
        .filter(|e| e.message.starts_with("duplicate key"))
        .map(|e| (e.document, e.resource.unwrap_or_default(), e.field.unwrap_or_default()))
        .collect();
    assert_eq!(
        found,
        [
            (1, "RouteTable/default/b".to_string(), "kind".to_string()),
            (1, "RouteTable/default/b".to_string(), "metadata.name".to_string()),
            (2, "RouteTable/default/j".to_string(), "spec.hosts".to_string()),
        ]
    );
}

#[test]
fn duplicate_keys_in_a_list_name_the_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.gloo.solo.io/v2\n  kind: RouteTable\n  metadata: {name: rt, namespace: demo}\n  spec: {hosts: [a], hosts: [b]}\n";
    let errors = errors_of(text);
    assert_eq!(errors[0].resource.as_deref(), Some("RouteTable/demo/rt"));
    assert_eq!(errors[0].field.as_deref(), Some("spec.hosts"));
}

#[test]
fn refuses_deep_nesting_and_oversized_input() {
    let depth = load::MAX_DEPTH + 1;
    let text = format!("kind: RouteTable\nspec: {}{}", "[".repeat(depth), "]".repeat(depth));
    let errors = errors_of(&text);
    assert!(errors[0].message.contains("nests deeper than 64 levels"), "{errors:#?}");
    // Exactly at the limit it is an ordinary (schema) error, not a nesting one.
    let ok_depth = load::MAX_DEPTH - 1;
    let text = format!(
        "kind: RouteTable\nspec: {}{}",
        "[".repeat(ok_depth),
        "]".repeat(ok_depth)
    );
    assert!(!errors_of(&text)[0].message.contains("nests deeper"));

    let big = format!("{ROUTE}#{}\n", "x".repeat(MAX_INPUT_BYTES));
    let errors = errors_of(&big);
    assert!(errors[0].message.contains("at most 8388608 bytes"), "{errors:#?}");
}

const ROUTE: &str = "apiVersion: networking.gloo.solo.io/v2\nkind: RouteTable\nmetadata: {name: rt}\nspec: {}\n";

#[test]
fn json_allows_what_yaml_forbids_in_strings() {
    // Found by the fuzzer: a raw DEL is valid in a JSON string but not in YAML.
    let text = "{\"apiVersion\": \"networking.gloo.solo.io/v2\", \"kind\": \"RouteTable\", \"metadata\": {\"name\": \"rt\", \"namespace\": \"demo\"}, \"spec\": {\"hosts\": [\"a.mesh.internal\"], \"http\": [{\"name\": \"a\u{7f}b\", \"forwardTo\": {\"destinations\": [{\"ref\": {\"name\": \"b\"}}]}}]}}";
    let resources = parse_documents("rt.json", text).unwrap();
    let Spec::RouteTable(spec) = &resources[0].spec else {
        panic!("not a route table")
    };
    assert_eq!(spec.http[0].name, "a\u{7f}b");
    // Duplicates are found in JSON read as JSON too, and a YAML flow mapping still reads as YAML.
    let text = "{\"kind\": \"RouteTable\", \"metadata\": {\"name\": \"a\"}, \"kind\": \"RouteTable\"}";
    assert!(
        errors_of(text)
            .iter()
            .any(|e| e.message.starts_with("duplicate key `kind`"))
    );
    parse_documents(
        "flow.yaml",
        "{apiVersion: networking.gloo.solo.io/v2, kind: RouteTable, metadata: {name: a}}",
    )
    .unwrap();
}
