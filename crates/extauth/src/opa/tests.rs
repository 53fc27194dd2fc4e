use super::*;

const GLOO_V0: &str = r#"
package test

default allow = false

allow {
    startswith(input.http_request.path, "/api/pets")
    input.http_request.method == "GET"
}

allow {
    input.attributes.request.http.headers["x-role"] == "admin"
}
"#;

const ENVOY_V1: &str = r#"
package envoy.authz

default allow := false

allow if {
    input.parsed_path[0] == "reports"
    "2024" in input.parsed_query.year
    input.attributes.source.address.socketAddress.address == "10.0.0.7"
}
"#;

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckInput {
    CheckInput {
        method: method.into(),
        path: path.into(),
        scheme: "http".into(),
        host: "api.example".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        source_address: "10.0.0.7".into(),
        ..Default::default()
    }
}

fn policy(query: &str, name: &str, source: &str) -> OpaPolicy {
    OpaPolicy::new(query, &BTreeMap::from([(name.to_string(), source.to_string())])).unwrap()
}

#[test]
fn decides_by_path_method_and_header() {
    let gloo = policy("data.test.allow == true", "demo/policy/policy.rego", GLOO_V0);
    let envoy = policy("data.envoy.authz.allow", "authz.rego", ENVOY_V1);
    let cases = [
        (&gloo, request("GET", "/api/pets/1", &[]), true),
        (&gloo, request("POST", "/api/pets/1", &[]), false),
        (&gloo, request("GET", "/api/users", &[]), false),
        (&gloo, request("DELETE", "/anything", &[("x-role", "admin")]), true),
        (&envoy, request("GET", "/reports/q1?year=2023&year=2024", &[]), true),
        (&envoy, request("GET", "/reports/q1?year=2023", &[]), false),
        (&envoy, request("GET", "/other?year=2024", &[]), false),
    ];
    for (index, (policy, input, allowed)) in cases.into_iter().enumerate() {
        let outcome = policy.check(&input);
        assert_eq!(
            outcome.is_allow(),
            allowed,
            "case {index}: {} {}",
            input.method,
            input.path
        );
        if !allowed {
            assert_eq!(outcome, Outcome::deny(403));
        }
    }
}

#[test]
fn a_query_that_is_not_exactly_true_denies() {
    for query in ["data.test.nothing", "data.test", "1 + 1", "data.test.allow == false"] {
        let policy = policy(query, "p.rego", GLOO_V0);
        assert!(!policy.check(&request("GET", "/api/pets", &[])).is_allow(), "{query}");
    }
}

#[test]
fn compile_errors_name_the_module_or_the_query() {
    let broken = OpaPolicy::new(
        "data.x.allow",
        &BTreeMap::from([("ns/cm/p.rego".to_string(), "package x\nallow {".to_string())]),
    )
    .unwrap_err();
    assert_eq!(broken.field, "regoModules[\"ns/cm/p.rego\"]");
    let bad_query = OpaPolicy::new(
        "data.test.allow ==",
        &BTreeMap::from([("p".to_string(), GLOO_V0.to_string())]),
    )
    .unwrap_err();
    assert_eq!(bad_query.field, "query");
    let empty = OpaPolicy::new(" ", &BTreeMap::new()).unwrap_err();
    assert_eq!(empty.field, "query");
}

#[test]
fn builds_the_envoy_plugin_input_shape() {
    let document = input_document(&request("GET", "/a/b%20c/?x=1&y=a+b&x=2&flag", &[("h", "v")]));
    assert_eq!(document["parsed_path"], json!(["a", "b c", ""]));
    assert_eq!(
        document["parsed_query"],
        json!({"x": ["1", "2"], "y": ["a b"], "flag": [""]})
    );
    assert_eq!(document["attributes"]["request"]["http"]["headers"]["h"], "v");
    assert_eq!(document["http_request"]["method"], "GET");
    assert_eq!(
        document["check_request"]["attributes"]["source"]["address"]["socketAddress"]["address"],
        "10.0.0.7"
    );
}

/// The prepared engine is reused from a pool: repeated checks keep giving the same answer.
/// (Their cost is measured by `scripts/bench-addons`, not here.)
#[test]
fn a_prepared_policy_answers_the_same_every_time() {
    let gloo = policy("data.test.allow == true", "p.rego", GLOO_V0);
    let allowed = request("GET", "/api/pets/1", &[("authorization", "Bearer x")]);
    let refused = request("DELETE", "/api/pets/1", &[("authorization", "Bearer x")]);
    for _ in 0..50 {
        assert!(gloo.check(&allowed).is_allow());
        assert!(!gloo.check(&refused).is_allow());
    }
}

/// The shape of Gloo's OPA guides: claims of the bearer token decide, via `io.jwt.decode`.
#[test]
fn io_jwt_decode_reads_the_claims_of_a_bearer_token() {
    use base64::Engine as _;
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let token = |role: &str| {
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"alice","role":"{role}"}}"#)),
            b64("sig")
        )
    };
    let source = r#"
package jwt

import future.keywords.if

default allow := false

claims := payload if {
    [_, payload, _] := io.jwt.decode(trim_prefix(input.http_request.headers.authorization, "Bearer "))
}

allow if claims.role == "admin"
"#;
    let opa = policy("data.jwt.allow == true", "jwt.rego", source);
    let with = |token: &str| request("GET", "/", &[("authorization", &format!("Bearer {token}"))]);
    assert!(opa.check(&with(&token("admin"))).is_allow());
    assert!(!opa.check(&with(&token("guest"))).is_allow());
    assert!(
        !opa.check(&with("not-a-jwt")).is_allow(),
        "a malformed token must deny, not error open"
    );
    assert!(!opa.check(&request("GET", "/", &[])).is_allow());
}
