//! External auth attached by policy, end to end: an ExtAuthServer and one ExtAuthPolicy per auth
//! type applied to the management server; `trellis ext-auth` registers with cluster-1's agent and
//! long-polls the resolved auth configs (Secrets, ConfigMaps, the OIDC client secret filled in);
//! the frontend's sidecar (real Envoy) calls it on each selected route of one RouteTable.
//!
//! Around the mesh, real servers: OpenLDAP slapd, an OpenID provider (`oidc-provider`), a JWKS
//! served over HTTP by this test, and a second `trellis ext-auth` (from a `--config` file) as
//! the passthrough target. The guarded routes lead to an echo workload (an in-test server behind
//! its own sidecar) that shows the headers ext-auth added upstream; the open catch-all leads to
//! the demo backend.
//!
//! Needs Envoy, slapd + ldap-utils and Node.js with the npm package: run scripts/setup.

use trellis_testkit as common;
use trellis_testkit::echo;
use trellis_testkit::jwt_issuer;
use trellis_testkit::oidc_provider;
use trellis_testkit::slapd;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::*;
use echo::EchoWorkload;
use jwt_issuer::Issuer;
use oidc_provider::OidcProvider;
use serde_json::{Value, json};
use slapd::Slapd;
use trellis_cli::up::LocalMesh;
use trellis_support::httpc::Response;
use trellis_support::process::free_port;

const HOST: &str = "http://backend.mesh.internal";
const CLIENT_ID: &str = "trellis-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret-0123456789";
/// Under the OIDC route's prefix, so the provider's redirect back goes through that route.
const CALLBACK: &str = "http://backend.mesh.internal/oidc/callback";
const JWT_ISSUER: &str = "https://issuer.e2e.example";
const JWT_AUDIENCE: &str = "backend-api";
const ALICE_KEY: &str = "alice-key-5f3c9a1e7b";
const CAROL_KEY: &str = "carol-key-0d8e4b2f61";
const MALLORY_KEY: &str = "mallory-key-9a7c3e5d";

/// Hashes made by independent tools, not by the code under test:
/// `openssl passwd -apr1 -salt Xy7Q2pLm alice-pw` and `printf 'pepper-1bob-pw' | sha1sum`;
/// the passthrough target's user: `openssl passwd -apr1 -salt P4rtn3r0 partner-pw`.
const CONFIG: &str = r#"
apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {name: backend, namespace: demo}
spec:
  hosts: [backend.mesh.internal]
  http:
  - {name: apr, labels: {auth: apr}, matchers: [{uri: {prefix: /apr}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: sha1, labels: {auth: sha1}, matchers: [{uri: {prefix: /sha1}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: key, labels: {auth: key}, matchers: [{uri: {prefix: /key}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: jwt, labels: {auth: jwt}, matchers: [{uri: {prefix: /jwt}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: opa, labels: {auth: opa}, matchers: [{uri: {prefix: /opa}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: ldap, labels: {auth: ldap}, matchers: [{uri: {prefix: /ldap}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: oidc, labels: {auth: oidc}, matchers: [{uri: {prefix: /oidc}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: pass, labels: {auth: pass}, matchers: [{uri: {prefix: /pass}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - {name: either, labels: {auth: either}, matchers: [{uri: {prefix: /either}}], forwardTo: {destinations: [{ref: {name: echo, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}}
  - name: open
    forwardTo: {destinations: [{ref: {name: backend, namespace: demo, cluster: cluster-1}, port: {number: 80}}]}
---
apiVersion: admin.gloo.solo.io/v2
kind: ExtAuthServer
metadata: {name: ext-auth, namespace: demo}
spec:
  destinationServer: {ref: {name: ext-auth-service, namespace: gloo-mesh}, port: {number: %EXT_AUTH_PORT%}}
  requestTimeout: 5s
  requestBody: {maxRequestBytes: 4096}
---
apiVersion: v1
kind: Secret
metadata: {name: key-alice, namespace: demo, labels: {api: e2e}}
type: extauth.solo.io/apikey
stringData: {api-key: %ALICE_KEY%, user-id: alice}
---
apiVersion: v1
kind: Secret
metadata: {name: key-carol, namespace: demo}
type: extauth.solo.io/apikey
stringData: {api-key: %CAROL_KEY%, user-id: carol}
---
# The same labels in another namespace: not selected (selectors stay in the policy's namespace).
apiVersion: v1
kind: Secret
metadata: {name: key-mallory, namespace: other, labels: {api: e2e}}
type: extauth.solo.io/apikey
stringData: {api-key: %MALLORY_KEY%, user-id: mallory}
---
apiVersion: v1
kind: Secret
metadata: {name: oidc-client, namespace: demo}
stringData: {client-secret: %CLIENT_SECRET%}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: opa-policy, namespace: demo}
data:
  policy.rego: |
    package e2e

    default allow = false

    allow {
      input.http_request.method == "GET"
      input.http_request.headers["x-team"] == "blue"
    }

    # The request body, which the ExtAuthServer's requestBody sends along.
    allow {
      input.http_request.method == "POST"
      input.http_request.body == "open sesame"
    }

    # A token's claims, read (not verified) with io.jwt.decode.
    allow {
      [_, payload, _] := io.jwt.decode(input.http_request.headers["x-team-token"])
      payload.team == "blue"
    }
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: basic-apr, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: apr}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: basic1
        basicAuth:
          realm: apr-realm
          apr: {users: {alice: {salt: Xy7Q2pLm, hashedPassword: 3mNmGCqI0BbNMfhRKVSMF0}}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: basic-sha1, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: sha1}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: basic1
        basicAuth:
          realm: sha1-realm
          encryption: {sha1: {}}
          userList: {users: {bob: {salt: pepper-1, hashedPassword: 5c7126a340c103c83012d8cc73f8c80458cfbae4}}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: api-key, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: key}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: key1
        apiKeyAuth:
          headerName: x-api-key
          headersFromMetadataEntry: {x-user-id: {name: user-id}}
          k8sSecretApikeyStorage: {labelSelector: {api: e2e}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: jwt, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: jwt}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: jwt1
        oauth2:
          accessTokenValidation:
            jwt:
              remoteJwks: {url: "%JWKS_URL%", refreshInterval: 60s}
              issuer: %JWT_ISSUER%
              audiences: [%JWT_AUDIENCE%]
            claimsToHeaders: [{claim: sub, header: x-user}, {claim: email, header: x-email}]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: opa, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: opa}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: opa1
        opaAuth: {modules: [{name: opa-policy}], query: "data.e2e.allow == true"}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: ldap, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: ldap}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: ldap1
        ldap:
          address: "%LDAP_URL%"
          userDnTemplate: "uid=%s,ou=people,dc=example,dc=org"
          allowedGroups: ["cn=developers,ou=groups,dc=example,dc=org"]
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: oidc, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: oidc}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: oidc1
        oauth2:
          oidcAuthorizationCode:
            clientId: %CLIENT_ID%
            clientSecretRef: {name: oidc-client, namespace: demo}
            issuerUrl: "%ISSUER_URL%"
            appUrl: http://backend.mesh.internal
            callbackPath: /oidc/callback
            logoutPath: /oidc/logout
            scopes: [email]
            headers: {idTokenHeader: x-id-token}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: passthrough, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: pass}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      configs:
      - name: pass1
        passThroughAuth: {grpc: {address: "127.0.0.1:%PARTNER_PORT%", connectionTimeout: 2s}}
---
apiVersion: security.policy.gloo.solo.io/v2
kind: ExtAuthPolicy
metadata: {name: either, namespace: demo}
spec:
  applyToRoutes: [{route: {labels: {auth: either}}}]
  config:
    server: {name: ext-auth}
    glooAuth:
      booleanExpr: basic1 || key1
      configs:
      - name: basic1
        basicAuth:
          realm: either-realm
          apr: {users: {alice: {salt: Xy7Q2pLm, hashedPassword: 3mNmGCqI0BbNMfhRKVSMF0}}}
      - name: key1
        apiKeyAuth:
          headerName: x-api-key
          headersFromMetadataEntry: {x-user-id: {name: user-id}}
          apiKeySecretRefs: [{name: key-carol, namespace: demo}]
"#;

/// The passthrough target's own config (its `--config` file), under the policy's config id.
const PARTNER_CONFIG: &str = r#"
configs:
- id: demo.passthrough
  spec:
    configs:
    - name: partner
      basicAuth:
        realm: partner-realm
        apr: {users: {partner-user: {salt: P4rtn3r0, hashedPassword: .gk4F/VqlOD2fPDE0V.By/}}}
"#;

const POLICIES: [&str; 9] = [
    "basic-apr",
    "basic-sha1",
    "api-key",
    "jwt",
    "opa",
    "ldap",
    "oidc",
    "passthrough",
    "either",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ext_auth_type_guards_its_route_through_real_envoy() {
    let started = Instant::now();
    let mesh = demo_mesh("ext-auth-policy").await;
    let dir = mesh.dir.clone();
    let logs = dir.join("logs");
    let agent = format!("127.0.0.1:{}", mesh.cluster("cluster-1").registry_port);

    // The servers around the mesh.
    let directory = Slapd::start(&dir.join("slapd")).await;
    let provider = OidcProvider::start(&dir.join("oidc-provider"), CLIENT_ID, CLIENT_SECRET, CALLBACK).await;
    let issuer = Issuer::new("e2e-1");
    let jwks_url = issuer.serve().await;
    let mut echo = EchoWorkload::start(&bin(), &agent, "demo", "echo", &logs).await;

    // The passthrough target: a second ext-auth, from a file only (no agent).
    let partner_port = free_port();
    let partner_file = dir.join("partner-auth.yaml");
    std::fs::write(&partner_file, PARTNER_CONFIG).unwrap();
    let mut partner = spawn_logged(
        &[
            "ext-auth".into(),
            "--listen".into(),
            format!("127.0.0.1:{partner_port}"),
            "--config".into(),
            partner_file.display().to_string(),
        ],
        &logs.join("ext-auth-partner.log"),
        &[],
    );
    // The add-on the policies use.
    let ext_auth_port = free_port();
    let mut ext_auth = spawn_logged(
        &[
            "ext-auth".into(),
            "--listen".into(),
            format!("127.0.0.1:{ext_auth_port}"),
            "--agent".into(),
            agent.clone(),
        ],
        &logs.join("ext-auth.log"),
        &[],
    );

    let config = CONFIG
        .replace("%EXT_AUTH_PORT%", &ext_auth_port.to_string())
        .replace("%PARTNER_PORT%", &partner_port.to_string())
        .replace("%ALICE_KEY%", ALICE_KEY)
        .replace("%CAROL_KEY%", CAROL_KEY)
        .replace("%MALLORY_KEY%", MALLORY_KEY)
        .replace("%CLIENT_ID%", CLIENT_ID)
        .replace("%CLIENT_SECRET%", CLIENT_SECRET)
        .replace("%ISSUER_URL%", &provider.issuer)
        .replace("%JWKS_URL%", &jwks_url)
        .replace("%JWT_ISSUER%", JWT_ISSUER)
        .replace("%JWT_AUDIENCE%", JWT_AUDIENCE)
        .replace("%LDAP_URL%", &directory.url());
    let response = mesh.apply("ext-auth.yaml", &config).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.body);

    let t = Tester {
        mesh: &mesh,
        proxy: format!("127.0.0.1:{}", mesh.app("frontend").outbound_port),
    };
    let alice_apr = basic("alice:alice-pw");
    let token = issuer.sign(&claims("alice"));

    // In effect once every guarded route lets good credentials through to the echo workload
    // (Envoy has the routes and filters, ext-auth has every config) and OIDC starts a login.
    let probes: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/apr", vec![("authorization", alice_apr.clone())]),
        ("/sha1", vec![("authorization", basic("bob:bob-pw"))]),
        ("/key", vec![("x-api-key", ALICE_KEY.into())]),
        ("/jwt", vec![("authorization", format!("Bearer {token}"))]),
        ("/opa", vec![("x-team", "blue".into())]),
        ("/ldap", vec![("authorization", basic("alice:alicepwd"))]),
        ("/pass", vec![("authorization", basic("partner-user:partner-pw"))]),
        ("/either", vec![("authorization", alice_apr.clone())]),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for (path, headers) in &probes {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        loop {
            let response = t.try_get(path, &headers).await;
            let echoed = matches!(&response, Ok(r) if r.status == 200 && r.body.contains("\"echo\":true"));
            if echoed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never let good credentials through (last: {response:?}); logs in {}",
                logs.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eventually("OIDC route redirects to the provider", || async {
        let response = t.get("/oidc/private", &[]).await;
        response.status == 302
            && response
                .header("location")
                .is_some_and(|l| l.starts_with(&provider.issuer))
    })
    .await;
    println!("ext-auth policies in effect after {:?}", started.elapsed());

    // The open catch-all: no auth on it, and it reaches the demo backend, not the echo.
    for path in ["/", "/open/anything", "/ap"] {
        let response = t.get(path, &[]).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        assert!(
            response.body.contains("\"service\":\"backend\""),
            "{path}: {}",
            response.body
        );
    }

    basic_apr(&t).await;
    basic_sha1(&t).await;
    api_key(&t).await;
    jwt(&t, &issuer).await;
    opa(&t).await;
    ldap(&t).await;
    oidc(&t, &provider).await;
    passthrough(&t).await;
    either(&t).await;
    malformed(&t, &issuer).await;

    // Every policy is ACCEPTED.
    for name in POLICIES {
        let url = format!("/api/v1/describe/ExtAuthPolicy/demo/{name}");
        let describe = mesh.api().unwrap().get(&url).await.unwrap();
        assert_eq!(describe.status, 200, "{name}: {}", describe.body);
        let value: Value = serde_json::from_str(&describe.body).unwrap();
        assert_eq!(
            value["resource"]["status"]["state"], "ACCEPTED",
            "{name}: {}",
            describe.body
        );
    }

    // Nothing crashed on the way: both ext-auth instances and the echo sidecar still run, and
    // good credentials still pass.
    assert!(
        matches!(ext_auth.try_wait(), Ok(None)),
        "ext-auth exited; see {}",
        logs.display()
    );
    assert!(matches!(partner.try_wait(), Ok(None)), "partner ext-auth exited");
    assert!(echo.sidecar_running(), "echo sidecar exited");
    assert_eq!(t.get("/apr", &[("authorization", &alice_apr)]).await.status, 200);
    // Every refusal above was ext-auth's decision: Envoy's filter never failed to get one (an
    // error would have been answered 403 by status_on_error, looking like a deny).
    let admin = mesh.app("frontend").admin_port;
    let (ok, denied, errors) = (
        envoy_stat(admin, "http.outbound.ext_authz.ok").await,
        envoy_stat(admin, "http.outbound.ext_authz.denied").await,
        envoy_stat(admin, "http.outbound.ext_authz.error").await,
    );
    assert_eq!(
        errors, 0,
        "ext_authz errors in the frontend's sidecar (ok {ok}, denied {denied})"
    );
    assert!(ok >= 20 && denied >= 50, "ext_authz ok {ok}, denied {denied}");
    println!("frontend sidecar ext_authz: ok {ok}, denied {denied}, error {errors}");
    println!("ext-auth policy e2e: all types checked in {:?}", started.elapsed());
    drop(echo);
    drop(provider);
    drop(directory);
    finish(mesh).await;
}

async fn basic_apr(t: &Tester<'_>) {
    let challenge = "Basic realm=\"apr-realm\"";
    t.refused("/apr", &[], 401, Some(challenge)).await;
    t.refused(
        "/apr",
        &[("authorization", &basic("alice:wrong"))],
        401,
        Some(challenge),
    )
    .await;
    t.refused(
        "/apr",
        &[("authorization", &basic("carol:alice-pw"))],
        401,
        Some(challenge),
    )
    .await;
    // bob's sha1 credentials are for another route.
    t.refused("/apr", &[("authorization", &basic("bob:bob-pw"))], 401, Some(challenge))
        .await;
    let seen = t
        .allowed("/apr/page?q=1", &[("authorization", &basic("alice:alice-pw"))])
        .await;
    assert_eq!(seen["x-user-id"], "alice");
    // A client cannot choose its upstream identity: ext-auth's header overwrites its own.
    let seen = t
        .allowed(
            "/apr",
            &[("authorization", &basic("alice:alice-pw")), ("x-user-id", "mallory")],
        )
        .await;
    assert_eq!(seen["x-user-id"], "alice", "a client-sent x-user-id reached upstream");
    println!("basic (apr1): none/wrong/unknown/other route's user 401 + challenge, alice 200 as alice");
}

async fn basic_sha1(t: &Tester<'_>) {
    let challenge = "Basic realm=\"sha1-realm\"";
    t.refused("/sha1", &[], 401, Some(challenge)).await;
    t.refused("/sha1", &[("authorization", &basic("bob:wrong"))], 401, Some(challenge))
        .await;
    t.refused(
        "/sha1",
        &[("authorization", &basic("alice:alice-pw"))],
        401,
        Some(challenge),
    )
    .await;
    let seen = t.allowed("/sha1", &[("authorization", &basic("bob:bob-pw"))]).await;
    assert_eq!(seen["x-user-id"], "bob");
    println!("basic (sha1): none/wrong/apr route's user 401 + challenge, bob 200 as bob");
}

async fn api_key(t: &Tester<'_>) {
    // Gloo answers a missing or unknown key with this challenge.
    let key_challenge = "API key is missing or invalid";
    t.refused("/key", &[], 401, Some(key_challenge)).await;
    t.refused("/key", &[("x-api-key", "not-a-key")], 401, Some(key_challenge))
        .await;
    // In a Secret with the selected labels, but in another namespace.
    t.refused("/key", &[("x-api-key", MALLORY_KEY)], 401, Some(key_challenge))
        .await;
    // Selected only by the `either` policy's apiKeySecretRefs.
    t.refused("/key", &[("x-api-key", CAROL_KEY)], 401, Some(key_challenge))
        .await;
    // The right key in the wrong header.
    t.refused("/key", &[("api-key", ALICE_KEY)], 401, Some(key_challenge))
        .await;
    let seen = t.allowed("/key", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(seen["x-user-id"], "alice");
    println!("API key (labelSelector): none/unknown/other namespace/unselected 401, alice's key 200 as alice");
}

async fn jwt(t: &Tester<'_>, issuer: &Issuer) {
    let bearer = |token: &str| format!("Bearer {token}");
    t.refused("/jwt", &[], 401, Some("Bearer")).await;
    let invalid = "Bearer error=\"invalid_token\"";
    let mut wrong_audience = claims("alice");
    wrong_audience["aud"] = json!("other-api");
    let mut wrong_issuer = claims("alice");
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let cases = [
        ("wrong audience", issuer.sign(&wrong_audience)),
        ("wrong issuer", issuer.sign(&wrong_issuer)),
        ("expired", issuer.sign(&expired)),
        ("another signer", Issuer::new("e2e-1").sign(&claims("alice"))),
    ];
    for (what, token) in cases {
        let response = t.get("/jwt", &[("authorization", &bearer(&token))]).await;
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        assert_eq!(response.header("www-authenticate"), Some(invalid), "{what}");
    }
    let seen = t
        .allowed("/jwt", &[("authorization", &bearer(&issuer.sign(&claims("alice"))))])
        .await;
    assert_eq!(seen["x-user"], "alice");
    assert_eq!(seen["x-email"], "alice@example.org");
    println!(
        "JWT (remote JWKS): none 401 Bearer, wrong aud/iss/expired/other signer 401 invalid_token, valid 200 with claims in headers"
    );
}

async fn opa(t: &Tester<'_>) {
    t.refused("/opa", &[], 403, None).await;
    t.refused("/opa", &[("x-team", "red")], 403, None).await;
    let post = t.send("POST", "/opa", &[("x-team", "blue")]).await;
    assert_eq!(post.status, 403, "POST is not allowed by the policy: {}", post.body);
    let seen = t.allowed("/opa/report", &[("x-team", "blue")]).await;
    assert_eq!(seen["x-team"], "blue");
    // requestBody: the policy sees the body.
    let opened = t.send_body("POST", "/opa", "open sesame").await;
    assert_eq!(opened.status, 200, "the body the policy allows: {}", opened.body);
    let wrong = t.send_body("POST", "/opa", "open barley").await;
    assert_eq!(wrong.status, 403, "another body: {}", wrong.body);
    // io.jwt.decode: the policy reads a token's claims.
    let token = |team: &str| {
        let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", part(json!({"alg": "none"})), part(json!({"team": team})))
    };
    let blue = token("blue");
    t.allowed("/opa", &[("x-team-token", &blue)]).await;
    t.refused("/opa", &[("x-team-token", &token("red"))], 403, None).await;
    println!(
        "OPA (ConfigMap module): no header/red team/POST 403, GET as blue team 200, POST with the allowed body 200, \
         a token of the blue team (io.jwt.decode) 200"
    );
}

async fn ldap(t: &Tester<'_>) {
    let challenge = "Basic realm=\"ldap\"";
    t.refused("/ldap", &[], 401, Some(challenge)).await;
    t.refused(
        "/ldap",
        &[("authorization", &basic("alice:wrong"))],
        401,
        Some(challenge),
    )
    .await;
    t.refused(
        "/ldap",
        &[("authorization", &basic("nobody:alicepwd"))],
        401,
        Some(challenge),
    )
    .await;
    // bob authenticates but is in sales, not developers.
    t.refused("/ldap", &[("authorization", &basic("bob:bobpwd"))], 403, None)
        .await;
    let seen = t.allowed("/ldap", &[("authorization", &basic("alice:alicepwd"))]).await;
    assert_eq!(seen["x-user-id"], "alice");
    println!("LDAP (slapd): none/wrong/unknown 401 + challenge, bob outside the group 403, alice 200 as alice");
}

async fn oidc(t: &Tester<'_>, provider: &OidcProvider) {
    // 1. No session: a redirect to the provider, and a state cookie.
    let start = t.get("/oidc/private?x=1", &[]).await;
    assert_eq!(start.status, 302, "{start:?}");
    let location = start.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/auth?", provider.issuer)),
        "{location}"
    );
    assert!(
        location.contains("redirect_uri=http%3A%2F%2Fbackend.mesh.internal%2Foidc%2Fcallback"),
        "{location}"
    );
    let state = cookie(&start, "__session-state");

    // 2. The user logs in at the provider (straight to it, not through the mesh).
    let callback = provider.login(&location, "alice").await;
    let callback_path = callback.strip_prefix(HOST).expect("the callback is on the app's host");

    // 3. The callback goes through Envoy to ext-auth, which exchanges the code: a session.
    let state_cookie = format!("__session-state={state}");
    let done = t.get(callback_path, &[("cookie", &state_cookie)]).await;
    assert_eq!(done.status, 302, "{done:?}\n{}", provider.log_text());
    assert_eq!(
        done.header("location"),
        Some("http://backend.mesh.internal/oidc/private?x=1")
    );
    let session = cookie(&done, "__session");
    let session_cookie = format!("__session={session}");

    // 4. With the session: through to the upstream, with alice's ID token.
    let seen = t.allowed("/oidc/private?x=1", &[("cookie", &session_cookie)]).await;
    let id_token = seen["x-id-token"].as_str().expect("no x-id-token upstream");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["iss"], provider.issuer.as_str());

    // The callback works once; a made-up session starts a new login.
    t.refused(callback_path, &[("cookie", &state_cookie)], 401, None).await;
    let forged = t
        .get("/oidc/private", &[("cookie", &format!("__session={}", "A".repeat(43)))])
        .await;
    assert_eq!(forged.status, 302, "{forged:?}");

    // 5. Logout through the mesh ends the session.
    let logout = t.get("/oidc/logout", &[("cookie", &session_cookie)]).await;
    assert_eq!(logout.status, 302, "{logout:?}");
    assert_eq!(logout.header("location"), Some(HOST));
    let after = t.get("/oidc/private", &[("cookie", &session_cookie)]).await;
    assert_eq!(after.status, 302, "the session survived logout: {after:?}");
    println!(
        "OIDC (oidc-provider): 302 to the provider, callback through Envoy 302 + session, 200 with alice's ID token, replay 401, logout ends it"
    );
}

async fn passthrough(t: &Tester<'_>) {
    // The partner's own challenge comes back: the decision is the second instance's.
    let challenge = "Basic realm=\"partner-realm\"";
    t.refused("/pass", &[], 401, Some(challenge)).await;
    t.refused(
        "/pass",
        &[("authorization", &basic("partner-user:wrong"))],
        401,
        Some(challenge),
    )
    .await;
    // The main instance's users mean nothing to the partner.
    t.refused(
        "/pass",
        &[("authorization", &basic("alice:alice-pw"))],
        401,
        Some(challenge),
    )
    .await;
    let seen = t
        .allowed("/pass", &[("authorization", &basic("partner-user:partner-pw"))])
        .await;
    assert_eq!(seen["x-user-id"], "partner-user");
    println!(
        "passthrough (gRPC to a second ext-auth): its 401 + realm for none/wrong/other users, 200 as partner-user"
    );
}

async fn either(t: &Tester<'_>) {
    let seen = t
        .allowed("/either", &[("authorization", &basic("alice:alice-pw"))])
        .await;
    assert_eq!(seen["x-user-id"], "alice");
    let seen = t.allowed("/either", &[("x-api-key", CAROL_KEY)]).await;
    assert_eq!(seen["x-user-id"], "carol");
    for headers in [
        vec![],
        vec![
            ("authorization", basic("alice:wrong")),
            ("x-api-key", "nope".to_string()),
        ],
        // alice's key is selected by labels for /key only.
        vec![("x-api-key", ALICE_KEY.to_string())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = t.get("/either", &headers).await;
        assert_eq!(response.status, 401, "{headers:?}: {}", response.body);
    }
    println!("booleanExpr basic1 || key1: alice's password 200, carol's key (apiKeySecretRefs) 200, neither 401");
}

/// Garbage credentials on every guarded route: refused (4xx), never a 5xx from ext-auth failing.
async fn malformed(t: &Tester<'_>, issuer: &Issuer) {
    let long_basic = format!("Basic {}", "A".repeat(20 * 1024));
    let long_bearer = format!("Bearer {}", "a.".repeat(10 * 1024));
    let long_key = "k".repeat(20 * 1024);
    let two_segments = {
        let token = issuer.sign(&claims("alice"));
        token.rsplit_once('.').unwrap().0.to_string()
    };
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("/apr", "authorization", "Basic %%%not-base64%%%".into(), 401),
        ("/apr", "authorization", "Basic YWxpY2U=".into(), 401), // "alice", no colon
        ("/apr", "authorization", "Basic //79/w==".into(), 401), // not UTF-8
        ("/apr", "authorization", long_basic.clone(), 401),
        ("/sha1", "authorization", "Basic ###".into(), 401),
        ("/key", "x-api-key", long_key.clone(), 401),
        ("/jwt", "authorization", format!("Bearer {two_segments}"), 401),
        ("/jwt", "authorization", "Bearer ....".into(), 401),
        ("/jwt", "authorization", "Bearer eyJhbGciOiJub25lIn0.e30.".into(), 401),
        ("/jwt", "authorization", long_bearer.clone(), 401),
        ("/opa", "x-team", "b".repeat(20 * 1024), 403),
        ("/ldap", "authorization", "Basic %%%".into(), 401),
        ("/ldap", "authorization", long_basic.clone(), 401),
        ("/ldap", "authorization", basic("alice)(uid=*:alicepwd"), 401),
        ("/pass", "authorization", long_basic.clone(), 401),
        ("/either", "authorization", "Basic %%%".into(), 401),
        ("/either", "x-api-key", long_key.clone(), 401),
    ];
    for (path, name, value, status) in &cases {
        let response = t.get(path, &[(*name, value.as_str())]).await;
        assert_eq!(
            response.status,
            *status,
            "{path} {name}: {}...: {}",
            &value[..value.len().min(40)],
            response.body
        );
    }
    // OIDC: callbacks with junk state, code or cookies are refused, not crashed on.
    let junk_state = format!("__session-state={}", "A".repeat(43));
    let callbacks = [
        ("/oidc/callback", junk_state.clone()),
        ("/oidc/callback?code=x&state=%zz", junk_state.clone()),
        ("/oidc/callback?code=%FF%FE&state=x", "__session-state=x".to_string()),
        (
            "/oidc/callback?code=x&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            junk_state.clone(),
        ),
    ];
    for (path, cookie) in &callbacks {
        let response = t.get(path, &[("cookie", cookie)]).await;
        assert_eq!(response.status, 401, "{path}: {}", response.body);
    }
    let junk_session = format!("__session={}", "%00".repeat(1000));
    let response = t.get("/oidc/private", &[("cookie", &junk_session)]).await;
    assert_eq!(
        response.status, 302,
        "a junk session cookie starts a login: {}",
        response.body
    );
    println!(
        "malformed credentials: {} cases refused with 401/403 (bad base64, no colon, non-UTF-8, 20 KiB headers, 2-segment/none-alg JWTs, LDAP filter chars, junk OIDC callbacks)",
        cases.len() + callbacks.len() + 1
    );
}

// === harness ===

/// Sends requests as the frontend app would: through its sidecar, to backend.mesh.internal.
struct Tester<'a> {
    mesh: &'a LocalMesh,
    proxy: String,
}

impl Tester<'_> {
    async fn try_send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        trellis_support::httpc::request(
            method,
            &format!("{HOST}{path}"),
            Some(&self.proxy),
            headers,
            None,
            Duration::from_secs(10),
        )
        .await
    }

    async fn try_get(&self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        self.try_send("GET", path, headers).await
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.try_send(method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}; logs in {}", self.mesh.dir.display()))
    }

    /// `method path` with a text body, through the frontend's sidecar.
    async fn send_body(&self, method: &str, path: &str, body: &str) -> Response {
        trellis_support::httpc::request(
            method,
            &format!("{HOST}{path}"),
            Some(&self.proxy),
            &[],
            Some(("text/plain", body.as_bytes().to_vec())),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}; logs in {}", self.mesh.dir.display()))
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers).await
    }

    /// Asserts a refusal with `status` (and the challenge, when given) that never reached the
    /// upstream.
    async fn refused(&self, path: &str, headers: &[(&str, &str)], status: u16, challenge: Option<&str>) {
        let response = self.get(path, headers).await;
        let shown: Vec<(&str, String)> = headers
            .iter()
            .map(|(k, v)| (*k, v.chars().take(40).collect()))
            .collect();
        assert_eq!(response.status, status, "{path} {shown:?}: {}", response.body);
        assert!(!response.body.contains("\"echo\""), "{path}: reached the upstream");
        if let Some(challenge) = challenge {
            assert_eq!(
                response.header("www-authenticate"),
                Some(challenge),
                "{path} {shown:?}: {:?}",
                response.headers
            );
        }
    }

    /// Asserts a 200 from the echo workload; returns the request headers it saw.
    async fn allowed(&self, path: &str, headers: &[(&str, &str)]) -> Value {
        let response = self.get(path, headers).await;
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        let body: Value = serde_json::from_str(&response.body).unwrap_or_else(|_| panic!("{path}: {}", response.body));
        assert_eq!(
            body["echo"], true,
            "{path} did not reach the echo workload: {}",
            response.body
        );
        assert_eq!(body["path"], path, "{}", response.body);
        body["headers"].clone()
    }
}

fn basic(user_password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

/// The value `response` sets for cookie `name`.
fn cookie(response: &Response, name: &str) -> String {
    response
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.split(';').next()?.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", response.headers))
        .to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a good token for `sub`.
fn claims(sub: &str) -> Value {
    json!({
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": sub,
        "email": format!("{sub}@example.org"),
        "iat": now(),
        "exp": now() + 600,
    })
}
