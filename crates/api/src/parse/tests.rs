use super::*;

const ROUTE_TABLE: &str = r#"
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata:
  name: backend
  namespace: demo
spec:
  hosts: [backend.mesh.internal]
  http:
  - name: split
    matchers:
    - uri: {prefix: /api}
      headers: [{name: x-canary, value: "true"}]
      method: GET
    forwardTo:
      destinations:
      - ref: {name: backend, namespace: demo, cluster: cluster-1}
        port: {number: 80}
        weight: 80
      - ref: {name: backend, namespace: demo, cluster: cluster-2}
        weight: 20
"#;

fn errors_of(text: &str) -> Vec<DocumentError> {
    match parse_documents("test.yaml", text) {
        Ok(resources) => panic!("expected an error, got {resources:?}"),
        Err(error) => error.errors(),
    }
}

#[test]
fn parses_a_gloo_route_table_as_is() {
    let resources = parse_documents("rt.yaml", ROUTE_TABLE).unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0].key().to_string(), "RouteTable/demo/backend");
    let Spec::RouteTable(spec) = &resources[0].spec else {
        panic!("not a route table")
    };
    let destinations = &spec.http[0].forward_to.as_ref().unwrap().destinations;
    assert_eq!(destinations[0].weight, Some(80));
    assert_eq!(destinations[1].reference.cluster, "cluster-2");
}

#[test]
fn round_trips_through_json() {
    let resource = parse_one("rt.yaml", ROUTE_TABLE).unwrap();
    let json = serde_json::to_string(&resource).unwrap();
    let again: Resource = serde_json::from_str(&json).unwrap();
    assert_eq!(resource, again);
}

#[test]
fn reads_several_documents_and_json() {
    let text = format!(
        "{ROUTE_TABLE}\n---\n{{\"apiVersion\": \"admin.gloo.solo.io/v2\", \"kind\": \"Workspace\", \"metadata\": {{\"name\": \"ws\"}}, \"spec\": {{\"workloadClusters\": [{{\"name\": \"*\"}}]}}}}\n---\n"
    );
    let resources = parse_documents("two.yaml", &text).unwrap();
    let keys: Vec<_> = resources.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(keys, ["RouteTable/demo/backend", "Workspace/default/ws"]);
}

/// Each row: input, expected field path, a fragment of the expected message.
#[test]
fn names_the_field_of_each_error() {
    let cases: &[(&str, Option<&str>, &str)] = &[
        (
            "kind: Gateway\napiVersion: x/v1\nmetadata: {name: a}",
            Some("kind"),
            "unknown kind \"Gateway\"",
        ),
        (
            "apiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}",
            Some("kind"),
            "is required",
        ),
        (
            "kind: RouteTable\napiVersion: admin.gloo.solo.io/v2\nmetadata: {name: a}",
            Some("apiVersion"),
            "does not serve kind RouteTable",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: Bad_Name}",
            Some("metadata.name"),
            "not a valid name",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {htp: []}",
            Some("spec.htp"),
            "unknown field `htp`",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec:\n  http:\n  - forwardTo:\n      destinations:\n      - ref: {name: b}\n        weight: -3",
            Some("spec.http[0].forwardTo.destinations[0].weight"),
            "invalid value",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec:\n  http:\n  - matchers: [{uri: {regex: '(['}}]\n    directResponse: {status: 200}",
            Some("spec.http[0].matchers[0].uri.regex"),
            "invalid regular expression",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec:\n  http:\n  - name: none",
            Some("spec.http[0]"),
            "exactly one action",
        ),
        (
            "kind: VirtualDestination\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {hosts: ['*.x.com'], ports: [{number: 80}]}",
            Some("spec.hosts[0]"),
            "cannot be a wildcard",
        ),
        (
            "kind: VirtualDestination\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {hosts: [a.b], ports: [{number: 70000}]}",
            Some("spec.ports[0].number"),
            "not a port",
        ),
        (
            "kind: VirtualDestination\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {hosts: [a.b]}",
            Some("spec.ports"),
            "at least one port",
        ),
        (
            "kind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}\nspec:\n  http: [\n",
            None,
            "malformed YAML",
        ),
        (
            "kind: AccessPolicy\napiVersion: security.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {authn: {tlsMode: MAYBE}}}",
            Some("spec.config.authn.tlsMode"),
            "not one of DISABLE",
        ),
        (
            "kind: AccessPolicy\napiVersion: security.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {authzList: [{allowedMethods: [FETCH]}]}}",
            Some("spec.config.authzList[0].allowedMethods[0]"),
            "not one of GET",
        ),
        (
            "kind: AccessPolicy\napiVersion: security.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {authzList: [{allowedIpBlocks: [10.0.0.0/40]}]}}",
            Some("spec.config.authzList[0].allowedIpBlocks[0]"),
            "not an IP address",
        ),
        (
            "kind: RetryTimeoutPolicy\napiVersion: resilience.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {requestTimeout: soon}}",
            Some("spec.config.requestTimeout"),
            "not a duration",
        ),
        (
            "kind: FaultInjectionPolicy\napiVersion: resilience.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {abort: {httpStatus: 503, percentage: 150}}}",
            Some("spec.config.abort.percentage"),
            "not a percentage",
        ),
        (
            "kind: RetryTimeoutPolicy\napiVersion: networking.gloo.solo.io/v2\nmetadata: {name: a}",
            Some("apiVersion"),
            "use \"resilience.policy.gloo.solo.io/v2\"",
        ),
        (
            "kind: HeaderManipulationPolicy\napiVersion: trafficcontrol.policy.gloo.solo.io/v2\nmetadata: {name: a}\nspec: {config: {removeRequestHeaders: [host]}}",
            Some("spec.config.removeRequestHeaders[0]"),
            "cannot be changed",
        ),
    ];
    for (input, field, message) in cases {
        let errors = errors_of(input);
        assert!(
            errors
                .iter()
                .any(|e| e.field.as_deref() == *field && e.message.contains(message)),
            "input:\n{input}\nwanted field {field:?} with {message:?}, got {errors:#?}"
        );
    }
}

#[test]
fn error_names_source_document_and_resource() {
    let text = format!(
        "{ROUTE_TABLE}---\nkind: RouteTable\napiVersion: networking.gloo.solo.io/v2\nmetadata: {{name: b, namespace: demo}}\nspec: {{hosts: ['bad host']}}\n"
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "test.yaml: document 2 (RouteTable/demo/b): field spec.hosts[0]: \"bad host\" is not a valid host name (only a left-most `*.` wildcard is allowed)"
    );
}

#[test]
fn rejects_duplicates_and_empty_input() {
    let twice = format!("{ROUTE_TABLE}---{ROUTE_TABLE}");
    assert!(errors_of(&twice)[0].message.contains("more than once"));
    assert!(matches!(
        parse_documents("empty.yaml", "---\n"),
        Err(ApiError::Empty(_))
    ));
}

#[test]
fn reports_every_bad_document_not_just_the_first() {
    let text = "kind: Nope\n---\nkind: AlsoNope\n";
    let errors = errors_of(text);
    assert_eq!(errors.iter().map(|e| e.document).collect::<Vec<_>>(), [1, 2]);
}

const ADDONS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: user-alice, namespace: demo, labels: {team: frontend}}
type: extauth.solo.io/apikey
data: {api-key: c2VjcmV0LWtleQ==}
stringData: {user-id: alice}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: opa-policy, namespace: demo}
data: {policy.rego: "package test\ndefault allow = false\n"}
---
apiVersion: admin.gloo.solo.io/v2
kind: ExtAuthServer
metadata: {name: ext-auth, namespace: demo}
spec:
  destinationServer: {ref: {name: ext-auth-service, namespace: gloo-mesh-addons, cluster: cluster-1}, kind: SERVICE, port: {name: grpc}}
  requestTimeout: 1s
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: api-key, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: api-key}}}]
  config:
    server: {name: ext-auth, namespace: demo}
    glooAuth:
      configs:
      - apiKeyAuth: {headerName: x-api-key, k8sSecretApikeyStorage: {labelSelector: {team: frontend}}}
---
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerConfig
metadata: {name: limits, namespace: demo}
spec:
  destinationServers: [{ref: {name: rate-limiter, namespace: gloo-mesh-addons}, port: {name: grpc}}]
  raw:
    descriptors:
    - key: generic_key
      value: counter
      rateLimit: {requestsPerUnit: 20, unit: MINUTE}
    setDescriptors:
    - simpleDescriptors: [{key: user}]
      rateLimit: {requestsPerUnit: 5, unit: SECOND}
---
apiVersion: admin.gloo.solo.io/v2
kind: RateLimitServerSettings
metadata: {name: settings, namespace: demo}
spec: {destinationServer: {ref: {name: rate-limiter, namespace: gloo-mesh-addons}}, denyOnFail: true}
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: RateLimitClientConfig
metadata: {name: client, namespace: demo}
spec:
  raw:
    rateLimits:
    - actions: [{genericKey: {descriptorValue: counter}}]
    - setActions: [{requestHeaders: {headerName: x-user, descriptorKey: user}}]
    - actions: [{metadata: {descriptorKey: user, metadataKey: {key: envoy.filters.http.ext_authz, path: [{key: userId}]}, defaultValue: anonymous}}]
---
apiVersion: trafficcontrol.policy.gloo.solo.io/v2
kind: RateLimitPolicy
metadata: {name: limit, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {ratelimited: "true"}}}]
  config:
    serverSettings: {name: settings, namespace: demo}
    ratelimitClientConfig: {name: client, namespace: demo}
    ratelimitServerConfig: {name: limits, namespace: demo}
"#;

#[test]
fn parses_gloo_add_on_kinds_and_core_secrets_as_is() {
    let resources = parse_documents("addons.yaml", ADDONS).unwrap();
    assert_eq!(resources.len(), 8);
    let Spec::Secret(secret) = &resources[0].spec else {
        panic!("not a secret")
    };
    assert_eq!(secret.value("api-key").as_deref(), Some("secret-key"));
    assert_eq!(secret.value("user-id").as_deref(), Some("alice"));
    // Core kinds serialize with their content at the top level and round-trip.
    let value = resources[0].to_value();
    assert_eq!(value["data"]["api-key"], "c2VjcmV0LWtleQ==");
    assert!(value.get("spec").is_none());
    for resource in &resources {
        let again: Resource = serde_json::from_value(resource.to_value()).unwrap();
        assert_eq!(&again, resource, "{}", resource.key());
    }
    let Spec::RateLimitServerConfig(config) = &resources[4].spec else {
        panic!()
    };
    assert_eq!(
        config.raw.descriptors[0].rate_limit.as_ref().unwrap().unit,
        crate::RateLimitUnit::Minute
    );
}

#[test]
fn add_on_errors_name_the_field() {
    let cases = [
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {api-key: '%%%'}\n",
            "data.api-key",
            "not base64",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndatas: {}\n",
            "datas",
            "unknown top-level field",
        ),
        (
            "apiVersion: trafficcontrol.policy.gloo.solo.io/v2\nkind: RateLimitPolicy\nmetadata: {name: p}\nspec: {config: {serverSettings: {name: s}, ratelimitServerConfig: {name: c}, raw: {rateLimits: [{actions: [{genericKey: {descriptorValue: a}, remoteAddress: {}}]}]}}}\n",
            "spec.config.raw.rateLimits[0].actions[0]",
            "exactly one",
        ),
        (
            "apiVersion: trafficcontrol.policy.gloo.solo.io/v2\nkind: RateLimitPolicy\nmetadata: {name: p}\nspec: {config: {serverSettings: {name: s}, ratelimitServerConfig: {name: c}, raw: {rateLimits: [{actions: [{metadata: {descriptorKey: user, metadataKey: {key: envoy.filters.http.ext_authz, path: []}}}]}]}}}\n",
            "spec.config.raw.rateLimits[0].actions[0].metadata.metadataKey",
            "a path",
        ),
        (
            "apiVersion: admin.gloo.solo.io/v2\nkind: RateLimitServerConfig\nmetadata: {name: c}\nspec: {raw: {descriptors: [{key: a, rateLimit: {unit: FORTNIGHT, requestsPerUnit: 1}}]}}\n",
            "spec.raw.descriptors[0].rateLimit.unit",
            "FORTNIGHT",
        ),
        (
            "apiVersion: security.policy.gloo.solo.io/v2\nkind: ExtAuthPolicy\nmetadata: {name: p}\nspec: {config: {server: {name: s}, glooAuth: {configs: []}}}\n",
            "spec.config.glooAuth.configs",
            "at least one",
        ),
        (
            "apiVersion: admin.gloo.solo.io/v2\nkind: ExtAuthServer\nmetadata: {name: s}\nspec: {destinationServer: {ref: {name: ext-auth-service}, kind: VIRTUAL_DESTINATION}}\n",
            "spec.destinationServer.kind",
            "only SERVICE",
        ),
        (
            "apiVersion: apimanagement.gloo.solo.io/v2\nkind: ApiDoc\nmetadata: {name: d}\nspec: {}\n",
            "kind",
            "ApiDoc (apimanagement.gloo.solo.io/v2) is not served: Gloo's API management",
        ),
    ];
    for (text, field, message) in cases {
        let errors = errors_of(text);
        assert_eq!(errors[0].field.as_deref(), Some(field), "{errors:?}");
        assert!(errors[0].message.contains(message), "{errors:?}");
    }
}

#[test]
fn every_problem_of_a_spec_is_reported_in_one_apply_not_one_per_round() {
    let errors = errors_of(
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: rt, namespace: demo}
spec:
  hosts: [a.example.com]
  hostz: [typo]
  http:
  - name: one
    forwardTo: {destinations: [{ref: {name: a}, weight: heavy}]}
  - name: two
    forwadTo: {}
",
    );
    let fields: Vec<&str> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "spec.hostz",
            "spec.http[0].forwardTo.destinations[0].weight",
            "spec.http[1].forwadTo"
        ],
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.resource.as_deref() == Some("RouteTable/demo/rt"))
    );
}

#[test]
fn egress_gateway_errors_name_the_field() {
    let es = |ports: &str| {
        format!(
            "apiVersion: networking.gloo.solo.io/v2\nkind: ExternalService\nmetadata: {{name: e}}\n\
             spec:\n  hosts: [api.example.com]\n  ports: {ports}\n"
        )
    };
    let cases = [
        (
            es("[{number: 443, egressGatewayRoutes: {portMatch: 70000, virtualGatewayRefs: [{name: g}]}}]"),
            "spec.ports[0].egressGatewayRoutes.portMatch",
            "not a port",
        ),
        (
            es("[{number: 443, egressGatewayRoutes: {portMatch: 80}}]"),
            "spec.ports[0].egressGatewayRoutes.virtualGatewayRefs",
            "at least one egress VirtualGateway",
        ),
        (
            es("[{number: 443, egressGatewayRoutes: {virtualGatewayRefs: [{namespace: gw}]}}]"),
            "spec.ports[0].egressGatewayRoutes.virtualGatewayRefs[0].name",
            "required",
        ),
        (
            es("[{number: 443, egressGatewayRoutes: {virtualGatewayRefs: [{name: g}]}}, \
                {number: 8443, egressGatewayRoutes: {portMatch: 80, virtualGatewayRefs: [{name: g}]}}]"),
            "spec.ports[1].egressGatewayRoutes.portMatch",
            "unique",
        ),
        (
            es("[{number: 443, egressGatewayRoutes: {portMach: 80, virtualGatewayRefs: [{name: g}]}}]"),
            "spec.ports[0].egressGatewayRoutes.portMach",
            "unknown field",
        ),
        (
            "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualGateway\nmetadata: {name: g}\n\
             spec:\n  listeners: [{port: {number: 443}, tls: {mode: ISTIO_MUTUAL}, exposedExternalServices: [{host: 'ns/bad host'}]}]\n"
                .to_string(),
            "spec.listeners[0].exposedExternalServices[0].host",
            "[namespace/]host",
        ),
    ];
    for (text, field, message) in cases {
        let errors = errors_of(&text);
        assert_eq!(errors[0].field.as_deref(), Some(field), "{errors:?}");
        assert!(errors[0].message.contains(message), "{errors:?}");
    }
    // Gloo's shape parses: `[namespace/]host` filters, a default portMatch.
    let ok = "apiVersion: networking.gloo.solo.io/v2\nkind: VirtualGateway\nmetadata: {name: g}\n\
              spec:\n  listeners: [{port: {number: 443}, tls: {mode: ISTIO_MUTUAL}, exposedExternalServices: [{host: '*/*.example.com', selector: {labels: {a: b}}}, {host: ./api.example.com}]}]\n";
    parse_documents("ok.yaml", ok).unwrap();
    parse_documents(
        "ok.yaml",
        &es("[{number: 443, egressGatewayRoutes: {virtualGatewayRefs: [{name: g}]}}]"),
    )
    .unwrap();
}
