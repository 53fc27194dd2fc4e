use serde_json::json;
use trellis_base::sha256_hex;

use super::*;

const POLICY: &str = "package test\n\ndefault allow = false\n\nallow {\n    input.http_request.method == \"GET\"\n}\n";

fn spec() -> Value {
    json!({
        "booleanExpr": "basic1 || (key1 && opa1)",
        "configs": [
            {"name": "basic1", "basicAuth": {"realm": "trellis", "apr": {"users": {"user": {"salt": "TYiryv0/", "hashedPassword": "8BvzLUO9IfGPGGsPnAgSu1"}}}}},
            {"name": "key1", "apiKeyAuth": {
                "headerName": "x-api-key",
                "labelSelector": {"team": "a"},
                "headersFromMetadataEntry": {"x-user-id": {"name": "user"}},
                "keys": [{"sha256": sha256_hex(b"secret-key"), "secret": "demo/k", "metadata": {"user": "alice"}}]
            }},
            {"name": "opa1", "opaAuth": {
                "query": "data.test.allow == true",
                "modules": [{"name": "policy", "namespace": "demo"}],
                "regoModules": {"demo/policy/policy.rego": POLICY}
            }},
            {"name": "jwt1", "oauth2": {"accessTokenValidation": {
                "jwt": {"remoteJwks": {"url": "http://127.0.0.1:1/jwks.json", "refreshInterval": "60s"}, "issuer": "https://issuer.example", "audiences": ["api"]},
                "claimsToHeaders": [{"claim": "sub", "header": "X-User"}],
                "requiredScopes": {"scope": ["read"]}
            }}},
            {"name": "ldap1", "ldap": {"address": "ldap://127.0.0.1:389"}},
            {"name": "oidc1", "oauth2": {"oidcAuthorizationCode": {"clientId": "c"}}},
            {"passThroughAuth": {"grpc": {"address": "127.0.0.1:9001", "connectionTimeout": "1s"}}}
        ]
    })
}

fn document(spec: Value) -> Value {
    json!({"configs": [{"id": "demo.api-auth", "spec": spec}]})
}

#[test]
fn compiles_every_supported_type() {
    let set = AuthConfigSet::compile(&document(spec())).unwrap();
    assert_eq!(set.ids().collect::<Vec<_>>(), vec!["demo.api-auth"]);
    let config = set.get("demo.api-auth").unwrap();
    let kinds: Vec<(&str, &str)> = config
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.evaluator.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("basic1", "basic"),
            ("key1", "api_key"),
            ("opa1", "opa"),
            ("jwt1", "jwt"),
            ("ldap1", "ldap"),
            ("oidc1", "oidc"),
            ("config_6", "pass_through")
        ]
    );
    assert_eq!(
        config.expr,
        Expr::parse(
            "basic1 || (key1 && opa1)",
            &kinds.iter().map(|k| k.0.to_string()).collect::<Vec<_>>()
        )
        .unwrap()
    );
    let Evaluator::Jwt(jwt) = &config.steps[3].evaluator else {
        panic!()
    };
    assert_eq!(jwt.required_scopes, vec!["read".to_string()]);
    assert_eq!(jwt.claims_to_headers, vec![("sub".to_string(), "x-user".to_string())]);
    assert!(matches!(&jwt.source, JwksSource::Remote { refresh_interval, .. } if refresh_interval.as_secs() == 60));
    let Evaluator::PassThrough(pass) = &config.steps[6].evaluator else {
        panic!()
    };
    assert_eq!(pass.connection_timeout, Duration::from_secs(1));
}

#[test]
fn evaluates_pure_steps() {
    let set = AuthConfigSet::compile(&document(spec())).unwrap();
    let config = set.get("demo.api-auth").unwrap();
    let mut input = CheckInput {
        method: "GET".into(),
        ..Default::default()
    };
    input.headers.insert("x-api-key".into(), "secret-key".into());
    let outcomes: Vec<Option<bool>> = config
        .steps
        .iter()
        .map(|s| s.evaluator.check_pure(&input, 0).map(|o| o.is_allow()))
        .collect();
    assert_eq!(
        outcomes,
        vec![Some(false), Some(true), Some(true), None, None, None, None]
    );
}

/// Replaces `configs[index]` of the valid spec, or sets a top-level field.
fn with_config(index: usize, config: Value) -> Value {
    let mut spec = spec();
    spec["configs"][index] = config;
    spec
}

#[test]
fn remote_jwks_may_be_https() {
    let jwt = json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {"jwt": {"remoteJwks": {"url": "https://idp.example/jwks"}}}}});
    let set = AuthConfigSet::compile(&document(with_config(3, jwt))).unwrap();
    let Evaluator::Jwt(jwt) = &set.get("demo.api-auth").unwrap().steps[3].evaluator else {
        panic!()
    };
    assert!(matches!(&jwt.source, JwksSource::Remote { url, .. } if url == "https://idp.example/jwks"));
}

#[test]
fn errors_name_the_config_entry_and_field() {
    let cases = [
        (
            with_config(
                2,
                json!({"name": "opa1", "opaAuth": {"query": "data.test.allow", "regoModules": {"demo/policy/policy.rego": "package test\nallow {"}}}),
            ),
            "demo.api-auth: configs[2] (opa1): opaAuth.regoModules[\"demo/policy/policy.rego\"]: ",
        ),
        (
            with_config(
                2,
                json!({"name": "opa1", "opaAuth": {"query": "data.test.allow ==", "regoModules": {"p": POLICY}}}),
            ),
            "demo.api-auth: configs[2] (opa1): opaAuth.query: ",
        ),
        (
            with_config(0, json!({"name": "basic1", "basicAuht": {}})),
            "demo.api-auth: configs[0] (basic1): basicAuht: unknown field `basicAuht`",
        ),
        (
            with_config(0, json!({"name": "basic1", "pluginAuth": {}})),
            "configs[0] (basic1): pluginAuth: not supported by trellis ext-auth",
        ),
        (
            with_config(0, json!({"name": "basic1"})),
            "configs[0] (basic1): no auth type: set one of basicAuth",
        ),
        (
            with_config(
                0,
                json!({"name": "basic1", "basicAuth": {"apr": {"users": {}}}, "ldap": {}}),
            ),
            "configs[0] (basic1): one auth type per config, found basicAuth and ldap",
        ),
        (
            with_config(
                0,
                json!({"name": "basic1", "basicAuth": {"apr": {"users": {"u": {"salt": "s", "hashedPassword": "x"}}}}}),
            ),
            "configs[0] (basic1): basicAuth.apr: users[\"u\"].hashedPassword: expected the 22 characters",
        ),
        (
            with_config(0, json!({"name": "basic1", "basicAuth": {"encryption": {"sha1": {}}}})),
            "configs[0] (basic1): basicAuth: set either apr",
        ),
        (
            with_config(
                1,
                json!({"name": "key1", "apiKeyAuth": {"keys": [{"sha256": "nothex"}]}}),
            ),
            "configs[1] (key1): apiKeyAuth.keys[0].sha256: expected 64 hex characters",
        ),
        (
            with_config(
                3,
                json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {"jwt": {"remoteJwks": {"url": "ftp://idp/jwks"}}}}}),
            ),
            "configs[3] (jwt1): oauth2.accessTokenValidation.jwt.remoteJwks.url: \"ftp://idp/jwks\": only http:// and https:// URLs are supported",
        ),
        (
            with_config(
                3,
                json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {"jwt": {"localJwks": {"inlineString": "{}"}}}}}),
            ),
            "configs[3] (jwt1): oauth2.accessTokenValidation.jwt.localJwks.inlineString: key set: not a JWKS document",
        ),
        (
            with_config(
                3,
                json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {"jwt": {"remoteJwks": {"url": "http://x/j", "refreshInterval": "soon"}}}}}),
            ),
            "configs[3] (jwt1): oauth2.accessTokenValidation.jwt.remoteJwks.refreshInterval: \"soon\" is not a duration",
        ),
        (
            with_config(
                3,
                json!({"name": "jwt1", "oauth2": {"accessTokenValidation": {"introspectionUrl": "http://x"}}}),
            ),
            "configs[3] (jwt1): oauth2.accessTokenValidation.introspectionUrl: token introspection is not supported",
        ),
        (
            with_config(6, json!({"passThroughAuth": {"grpc": {"address": "nowhere"}}})),
            "configs[6]: passThroughAuth.grpc.address: \"nowhere\" is not host:port",
        ),
        (
            with_config(1, json!({"name": "basic1", "ldap": {}})),
            "configs[1] (basic1): name: \"basic1\" is used by another config",
        ),
        (
            {
                let mut spec = spec();
                spec["booleanExpr"] = json!("basic1 || jwt2");
                spec
            },
            "demo.api-auth: booleanExpr: at character 11: no config is named \"jwt2\"",
        ),
        (
            json!({"configs": []}),
            "demo.api-auth: configs: at least one config is required",
        ),
        (
            json!({"configs": [], "extra": 1}),
            "demo.api-auth: extra: unknown field `extra`",
        ),
    ];
    for (spec, expected) in cases {
        let error = AuthConfigSet::compile(&document(spec)).unwrap_err().to_string();
        assert!(error.contains(expected), "\n got: {error}\nwant: {expected}");
    }
}

#[test]
fn document_errors_name_the_entry() {
    let cases = [
        (
            json!({"configs": [{"id": "", "spec": spec()}]}),
            "ext-auth document: configs[0].id: must not be empty",
        ),
        (
            json!({"configs": [{"id": "a", "spec": spec()}, {"id": "a", "spec": spec()}]}),
            "configs[1].id: \"a\" appears twice",
        ),
        (
            json!({"configs": [{"spec": spec()}]}),
            "ext-auth document: configs[0]: missing field `id`",
        ),
        (json!({"cofigs": []}), "ext-auth document: cofigs: unknown field"),
    ];
    for (document, expected) in cases {
        let error = AuthConfigSet::compile(&document).unwrap_err().to_string();
        assert!(error.contains(expected), "\n got: {error}\nwant: {expected}");
    }
}

#[test]
fn fail_on_redirect_turns_redirects_into_401() {
    let mut spec = spec();
    spec["failOnRedirect"] = json!(true);
    let set = AuthConfigSet::compile(&document(spec)).unwrap();
    let config = set.get("demo.api-auth").unwrap();
    let redirect = Outcome::Deny {
        status: 302,
        headers: vec![("location".into(), "https://idp".into())],
        body: String::new(),
    };
    assert_eq!(config.finish(redirect), Outcome::deny(401));
    assert_eq!(config.finish(Outcome::deny(403)), Outcome::deny(403));
}

#[test]
fn lenient_compile_keeps_the_valid_configs() {
    let document = json!({"configs": [
        {"id": "good", "spec": spec()},
        {"id": "bad", "spec": {"configs": [{"name": "x", "pluginAuth": {}}]}},
        {"id": "good", "spec": spec()},
    ]});
    let (set, errors) = AuthConfigSet::compile_lenient(&document).unwrap();
    assert_eq!(set.ids().collect::<Vec<_>>(), vec!["good"]);
    let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("bad: configs[0] (x): pluginAuth"), "{errors:?}");
    assert!(
        errors[1].contains("configs[2].id: \"good\" appears twice"),
        "{errors:?}"
    );
    assert!(AuthConfigSet::compile(&document).is_err());
    assert!(AuthConfigSet::compile_lenient(&json!({"configs": {}})).is_err());
}
