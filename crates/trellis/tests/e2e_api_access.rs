//! The management API's doors, tried as an attacker on the host would, with the legitimate path
//! working in the same run: HTTPS only, no endpoint but /healthz without credentials, RBAC per
//! verb, kind and namespace (the built-in personas), every change and refusal audited, tokens
//! revocable, resourceVersion preconditions, deletes admitted like applies; client certificates
//! and OIDC ID tokens from a real provider (the `oidc-provider` npm package).

use trellis_testkit as common;
use trellis_testkit::oidc_provider;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use trellis_cli::api_client::ApiClient;

const SETUP: &str = "apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: team-a, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: team-a}]}]
---
apiVersion: admin.gloo.solo.io/v2
kind: Workspace
metadata: {name: team-b, namespace: trellis}
spec:
  workloadClusters: [{name: '*', namespaces: [{name: team-b}]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: auditors-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-viewer}
subjects: [{kind: Group, name: auditors}, {kind: User, name: carol}, {kind: User, name: 'oidc:olivia'}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: team-a-operators
  annotations: {trellis.io/workspace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: trellis-workspace-operator}
subjects: [{kind: User, name: alice}]
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: team-a}
stringData: {api-key: do-not-show-me}
";

fn route_table(namespace: &str, weight: u32) -> String {
    format!(
        "apiVersion: networking.gloo.solo.io/v2
kind: RouteTable
metadata: {{name: web, namespace: {namespace}}}
spec:
  hosts: [web.{namespace}.mesh.internal]
  http:
  - forwardTo:
      destinations:
      - ref: {{name: web, namespace: {namespace}}}
        weight: {weight}
"
    )
}

async fn apply(api: &ApiClient, yaml: &str) -> trellis_support::httpc::Response {
    api.request(
        "POST",
        "/api/v1/apply?source=test.yaml",
        Some(("application/yaml", yaml.as_bytes().to_vec())),
    )
    .await
    .unwrap()
}

fn with_token(admin: &ApiClient, ca: &std::path::Path, token: Option<&str>) -> ApiClient {
    ApiClient::new(&admin.server, Some(ca), token.map(str::to_string)).unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_door_is_closed_and_rbac_and_audit_hold() {
    let dir = test_dir("api-access");
    // A CA of the operator's for client certificates, and one of an attacker's.
    let now = SystemTime::now();
    let operator_ca = trellis_pki::Authority::generate_root("operator users", Duration::from_secs(86400), now).unwrap();
    let rogue_ca = trellis_pki::Authority::generate_root("rogue", Duration::from_secs(86400), now).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users-ca.pem"), &operator_ca.cert_pem).unwrap();
    let client_cert = |ca: &trellis_pki::Authority, name: &str| {
        let (key, csr) = trellis_pki::new_key_and_csr(name).unwrap();
        let cert = ca
            .sign_client_csr(
                &csr,
                &format!("spiffe://users/{name}"),
                name,
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key.0).unwrap();
        (cert_path, key_path)
    };
    let ca_arg = dir.join("users-ca.pem").display().to_string();
    let mut server = MgmtProcess::start(&dir, &["--api-client-ca", &ca_arg]).await;
    let admin = server.api();
    let api_ca = server.data_dir.join("pki/api-ca.pem");

    // The admin token and the client config holding its path are the owner's only.
    let token_file = server.data_dir.join("api/admin-token");
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&server.admin_config()), 0o600);
    assert!(
        !std::fs::read_to_string(&server.log)
            .unwrap()
            .contains(std::fs::read_to_string(&token_file).unwrap().trim()),
        "the admin token is in the log"
    );

    // The legitimate path: the admin sets up two workspaces, RBAC and a Secret.
    let response = apply(&admin, SETUP).await;
    assert_eq!(response.status, 200, "{}", response.body);

    // Plain HTTP to the API port gets no API; HTTPS without trusting the API CA fails.
    let plain = server.url.replace("https://", "http://");
    let answer = trellis_support::httpc::get(&format!("{plain}/api/v1/resources"), Duration::from_secs(3)).await;
    assert!(
        answer.is_err() || answer.unwrap().status != 200,
        "plain HTTP answered the API"
    );
    let untrusted =
        trellis_support::httpc::get(&format!("{}/api/v1/resources", server.url), Duration::from_secs(3)).await;
    assert!(untrusted.is_err(), "the API's certificate verified without its CA");

    // No credentials, a made-up token, a token that is almost the admin's: 401 on every
    // endpoint but /healthz, and nothing changes.
    let stored = stored_resources(&admin).await;
    let admin_token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let mut almost = admin_token.clone();
    almost.pop();
    almost.push('x');
    let endpoints: &[(&str, &str)] = &[
        ("GET", "/api/v1/resources"),
        ("GET", "/api/v1/resources/Secret/team-a/keys"),
        ("DELETE", "/api/v1/resources/Secret/team-a/keys"),
        ("POST", "/api/v1/apply"),
        ("POST", "/api/v1/delete"),
        ("GET", "/api/v1/describe/Secret/team-a/keys"),
        ("GET", "/api/v1/clusters"),
        ("POST", "/api/v1/clusters/cluster-1/register"),
        ("POST", "/api/v1/clusters/cluster-1/rotate"),
        ("POST", "/api/v1/clusters/cluster-1/deregister"),
        ("GET", "/api/v1/check"),
        ("GET", "/api/v1/translation"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("DELETE", "/api/v1/tokens/x"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/version"),
    ];
    for token in [None, Some("not-a-token"), Some(almost.as_str())] {
        let client = with_token(&admin, &api_ca, token);
        for (method, path) in endpoints {
            let body = (*method == "POST").then(|| ("application/yaml", route_table("team-a", 1).into_bytes()));
            let response = client.request(method, path, body).await.unwrap();
            assert_eq!(
                response.status, 401,
                "{method} {path} with {token:?}: {}",
                response.body
            );
            assert_eq!(response.header("www-authenticate"), Some("Bearer realm=\"trellis\""));
        }
    }
    let health = with_token(&admin, &api_ca, None).get("/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(
        stored_resources(&admin).await,
        stored,
        "an unauthenticated request changed the store"
    );

    // A viewer (group auditors) lists config but cannot change it or read Secrets, tokens or
    // the audit log; the refusal names the verb, the kind, the namespace and what is missing.
    let viewer = with_token(
        &admin,
        &api_ca,
        Some(&issue_token(&admin, "vera", "vera", &["auditors"]).await),
    );
    let listed = viewer.get_json("/api/v1/resources?kind=Workspace").await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    let refused = apply(&viewer, &route_table("team-a", 1)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    for fragment in ["vera", "create routetables.networking.gloo.solo.io in namespace team-a"] {
        assert!(refused.body.contains(fragment), "{fragment} not in {}", refused.body);
    }
    let secrets = viewer.get_json("/api/v1/resources?kind=Secret").await.unwrap();
    assert_eq!(
        secrets["items"].as_array().unwrap().len(),
        0,
        "a viewer listed Secrets: {secrets}"
    );
    assert_eq!(
        viewer.get("/api/v1/resources/Secret/team-a/keys").await.unwrap().status,
        403
    );
    assert_eq!(viewer.get("/api/v1/tokens").await.unwrap().status, 403);
    assert_eq!(viewer.get("/api/v1/audit").await.unwrap().status, 403);
    let register = viewer
        .request("POST", "/api/v1/clusters/evil/register", None)
        .await
        .unwrap();
    assert_eq!(register.status, 403, "{}", register.body);

    // A workspace operator edits its workspace's namespaces and nothing else.
    let alice = with_token(&admin, &api_ca, Some(&issue_token(&admin, "alice", "alice", &[]).await));
    let created = apply(&alice, &route_table("team-a", 1)).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let updated = apply(&alice, &route_table("team-a", 7)).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(apply(&alice, &route_table("team-b", 1)).await.status, 403);
    let admins_table = apply(&admin, &route_table("team-b", 1)).await;
    assert_eq!(admins_table.status, 200, "{}", admins_table.body);
    let delete = alice
        .request("DELETE", "/api/v1/resources/RouteTable/team-b/web", None)
        .await
        .unwrap();
    assert_eq!(delete.status, 403, "{}", delete.body);
    let escalate = apply(
        &alice,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: me, namespace: team-a}\nroleRef: {kind: ClusterRole, name: trellis-admin}\nsubjects: [{kind: User, name: alice}]\n",
    )
    .await;
    assert_eq!(
        escalate.status, 403,
        "an operator bound itself to admin: {}",
        escalate.body
    );
    // Its own namespace's Secret: readable, values never shown.
    let secret = alice.get("/api/v1/resources/Secret/team-a/keys").await.unwrap();
    assert_eq!(secret.status, 200, "{}", secret.body);
    assert!(!secret.body.contains("do-not-show-me"), "{}", secret.body);

    // A built-in persona cannot be redefined, even by the admin.
    let redefine = apply(
        &admin,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: trellis-viewer}\nrules: [{apiGroups: ['*'], resources: ['*'], verbs: ['*']}]\n",
    )
    .await;
    assert_eq!(redefine.status, 400, "{}", redefine.body);

    // resourceVersion is a precondition: a stale writer gets 409 and changes nothing.
    let current = admin.get_json("/api/v1/resources/RouteTable/team-a/web").await.unwrap();
    let version = current["metadata"]["resourceVersion"].as_u64().unwrap();
    let stale = route_table("team-a", 9).replace(
        "metadata: {name: web, namespace: team-a}",
        &format!(
            "metadata: {{name: web, namespace: team-a, resourceVersion: '{}'}}",
            version - 1
        ),
    );
    let conflict = apply(&admin, &stale).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    let fresh = stale.replace(&format!("'{}'", version - 1), &format!("'{version}'"));
    assert_eq!(apply(&admin, &fresh).await.status, 200);

    // A delete passes admission too: a ConfigMap an ExtAuthPolicy's Rego needs stays.
    let policy = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: policy, namespace: team-a}\ndata:\n  policy.rego: \"package admin\\ndefault allow = false\\n\"\n---\napiVersion: security.policy.gloo.solo.io/v2\nkind: ExtAuthPolicy\nmetadata: {name: admin, namespace: team-a}\nspec:\n  config:\n    server: {name: ext-auth}\n    glooAuth:\n      configs:\n      - name: opa\n        opaAuth: {modules: [{name: policy}], query: data.admin.allow == true}\n";
    assert_eq!(apply(&admin, policy).await.status, 200);
    let needed = admin
        .request("DELETE", "/api/v1/resources/ConfigMap/team-a/policy", None)
        .await
        .unwrap();
    assert_eq!(needed.status, 422, "{}", needed.body);
    assert!(needed.body.contains("ExtAuthPolicy/team-a/admin"), "{}", needed.body);

    // Client certificates: the operator CA's is a user; a rogue CA's does not get a TLS session.
    let (cert, key) = client_cert(&operator_ca, "carol");
    let carol = trellis_support::httpc::HttpClient::with_client_certificate(std::slice::from_ref(&api_ca), &cert, &key)
        .unwrap();
    let listed = carol
        .get(
            &format!("{}/api/v1/resources?kind=RouteTable", server.url),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    let refused = carol
        .request(
            "POST",
            &format!("{}/api/v1/apply", server.url),
            None,
            &[],
            Some(("application/yaml", route_table("team-a", 2).into_bytes())),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let (cert, key) = client_cert(&rogue_ca, "admin");
    let rogue = trellis_support::httpc::HttpClient::with_client_certificate(std::slice::from_ref(&api_ca), &cert, &key)
        .unwrap();
    let answer = rogue
        .get(&format!("{}/api/v1/resources", server.url), Duration::from_secs(5))
        .await;
    assert!(
        answer.is_err() || answer.unwrap().status == 401,
        "a rogue CA's certificate was accepted"
    );

    // A revoked token stops working at once.
    let revoke = admin.request("DELETE", "/api/v1/tokens/vera", None).await.unwrap();
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    assert_eq!(viewer.get("/api/v1/resources").await.unwrap().status, 401);

    // The audit log names who did what, with the diff, and every refusal; it survives a restart.
    server.restart().await;
    let admin = server.api();
    let audit = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    let records = audit["records"].as_array().unwrap();
    let find = |user: &str, action: &str, result: &str, target: &str| {
        records.iter().find(|r| {
            r["user"] == user
                && r["action"] == action
                && r["result"] == result
                && r["target"].as_str().unwrap().contains(target)
        })
    };
    assert!(
        find("vera", "apply", "denied", "RouteTable/team-a/web").is_some(),
        "{audit:#}"
    );
    assert!(
        find("alice", "apply", "denied", "RouteTable/team-b/web").is_some(),
        "{audit:#}"
    );
    assert!(
        find("alice", "delete", "denied", "RouteTable/team-b/web").is_some(),
        "{audit:#}"
    );
    assert!(find("vera", "register", "denied", "evil").is_some(), "{audit:#}");
    assert!(
        find("carol", "apply", "denied", "RouteTable/team-a/web").is_some(),
        "{audit:#}"
    );
    assert!(find("admin", "token-revoke", "ok", "token/vera").is_some(), "{audit:#}");
    let update = records
        .iter()
        .filter(|r| r["user"] == "alice" && r["action"] == "apply" && r["result"] == "ok")
        .find(|r| {
            r["diff"].as_array().is_some_and(|d| !d.is_empty()) && r["message"].as_str().unwrap().contains("configured")
        })
        .unwrap_or_else(|| panic!("no audited update by alice with a diff: {audit:#}"));
    assert!(update["diff"].to_string().contains("7"), "{update}");
    assert!(
        !audit.to_string().contains("do-not-show-me"),
        "a Secret value reached the audit log"
    );

    // The CLI finds server and credential in the admin client config, with no flags.
    let output = tokio::process::Command::new(bin())
        .args(["audit", "--user", "alice", "--result", "denied"])
        .env("TRELLIS_CONFIG", server.admin_config())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("RouteTable/team-b/web") && !stdout.contains("vera"),
        "{stdout}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// PKCE S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_id_tokens_from_the_operators_provider_are_users() {
    let dir = test_dir("api-oidc");
    let redirect = "http://127.0.0.1:1/callback";
    let provider = oidc_provider::OidcProvider::start(&dir.join("idp"), "trellis-cli", "cli-secret", redirect).await;
    let server = MgmtProcess::start(
        &dir,
        &["--oidc-issuer", &provider.issuer, "--oidc-audience", "trellis-cli"],
    )
    .await;
    let admin = server.api();
    let binding = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: olivia-views}\nroleRef: {kind: ClusterRole, name: trellis-viewer}\nsubjects: [{kind: User, name: 'oidc:olivia'}]\n";
    assert_eq!(apply(&admin, binding).await.status, 200);

    // Olivia logs in at the provider (authorization code with PKCE) and gets an ID token.
    let verifier = "a-pkce-verifier-of-enough-length-0123456789abcdef";
    let authorize = format!(
        "{}/auth?response_type=code&client_id=trellis-cli&redirect_uri={}&scope=openid&state=s1&nonce=n1&code_challenge={}&code_challenge_method=S256",
        provider.issuer,
        trellis_cli::client::encode(redirect),
        challenge(verifier)
    );
    let back = provider.login(&authorize, "olivia").await;
    let code = back
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let basic = base64::engine::general_purpose::STANDARD.encode("trellis-cli:cli-secret");
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
        trellis_cli::client::encode(redirect)
    );
    let tokens = trellis_support::httpc::request(
        "POST",
        &format!("{}/token", provider.issuer),
        None,
        &[("authorization", &format!("Basic {basic}"))],
        Some(("application/x-www-form-urlencoded", form.into_bytes())),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let id_token = serde_json::from_str::<Value>(&tokens.body).unwrap()["id_token"]
        .as_str()
        .unwrap()
        .to_string();

    let api_ca = server.data_dir.join("pki/api-ca.pem");
    let olivia = ApiClient::new(&server.url, Some(&api_ca), Some(id_token.clone())).unwrap();
    assert_eq!(olivia.get("/api/v1/resources").await.unwrap().status, 200);
    assert_eq!(apply(&olivia, &route_table("demo", 1)).await.status, 403);
    // A tampered token (another subject, same signature) is refused.
    let mut parts: Vec<String> = id_token.split('.').map(str::to_string).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["sub"] = json!("admin");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = ApiClient::new(&server.url, Some(&api_ca), Some(parts.join("."))).unwrap();
    assert_eq!(forged.get("/api/v1/resources").await.unwrap().status, 401);

    let audit = admin.get_json("/api/v1/audit").await.unwrap();
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user"] == "oidc:olivia" && r["result"] == "denied" && r["authenticatedBy"] == "oidc"),
        "{audit:#}"
    );
    drop(server);
    drop(provider);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_error_answers_are_bounded() {
    let dir = test_dir("api-bounds");
    let server = MgmtProcess::start(&dir, &[]).await;
    let admin = server.api();
    let config_map = |i: usize| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: demo}}\ndata: {{k: v}}\n")
    };
    let many: Vec<String> = (0..1001).map(config_map).collect();
    let response = apply(&admin, &many.join("---\n")).await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert!(response.body.contains("at most 1000"), "{}", response.body);
    assert_eq!(stored_resources(&admin).await, r#"{"items":[]}"#);
    // 150 invalid documents: every one is counted, the first 100 listed.
    let invalid: Vec<String> = (0..150)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: demo}}\nbogus{i}: {}\n",
                "x".repeat(2000)
            )
        })
        .collect();
    let response = apply(&admin, &invalid.join("---\n")).await;
    assert_eq!(response.status, 422);
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["details"].as_array().unwrap().len(), 100, "{}", body["error"]);
    assert!(
        body["error"].as_str().unwrap().starts_with("150 error(s)"),
        "{}",
        body["error"]
    );
    assert!(response.body.len() < 150_000, "answer of {} bytes", response.body.len());

    // A refused apply is audited, a Secret's change shows as a changed fingerprint, never a value.
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: demo}}\nstringData: {{api-key: {value}}}\n"
        )
    };
    assert_eq!(apply(&admin, &secret("first-secret-value")).await.status, 200);
    assert_eq!(apply(&admin, &secret("second-secret-value")).await.status, 200);
    let audit = admin.get_json("/api/v1/audit?limit=1000").await.unwrap();
    let text = audit.to_string();
    assert!(
        !text.contains("first-secret-value") && !text.contains("second-secret-value"),
        "{audit:#}"
    );
    let change = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["target"] == "Secret/demo/keys")
        .unwrap();
    let diff = &change["diff"][0];
    assert!(diff["path"].as_str().unwrap().ends_with("api-key"), "{change}");
    assert_ne!(diff["before"], diff["after"], "{change}");
    assert!(
        text.contains("\"result\":\"rejected\""),
        "the refused applies are not audited: {audit:#}"
    );

    // Any signed-in user can provoke refusals: they cannot flood the audit log.
    let api_ca = server.data_dir.join("pki/api-ca.pem");
    let pest = with_token(&admin, &api_ca, Some(&issue_token(&admin, "pest", "pest", &[]).await));
    for _ in 0..100 {
        assert_eq!(apply(&pest, &route_table("demo", 1)).await.status, 403);
    }
    let audit = admin.get_json("/api/v1/audit?user=pest&limit=1000").await.unwrap();
    let recorded = audit["records"].as_array().unwrap().len();
    assert!(
        (30..=60).contains(&recorded),
        "{recorded} refusals of one user recorded"
    );
    assert!(server.metric("trellis_mgmt_api_refusals_unaudited_total").await >= 40);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two writers that would break each other, racing: admission and write are one step, so in
/// every round exactly one of them lands and the stored config never holds the broken pair.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_cannot_both_pass_admission() {
    let dir = test_dir("api-race");
    let server = MgmtProcess::start(&dir, &[]).await;
    let admin = server.api();
    let policy = "apiVersion: security.policy.gloo.solo.io/v2\nkind: ExtAuthPolicy\nmetadata: {name: admin, namespace: demo}\nspec:\n  config:\n    server: {name: ext-auth}\n    glooAuth:\n      configs:\n      - name: opa\n        opaAuth: {modules: [{name: policy}], query: data.admin.allow == true}\n";
    let broken_rego = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: policy, namespace: demo}\ndata:\n  policy.rego: \"package admin\\nallow {{{ nonsense\"\n";
    for round in 0..10 {
        let (first, second) = tokio::join!(apply(&admin, policy), apply(&admin, broken_rego));
        let accepted = [first.status, second.status].iter().filter(|s| **s == 200).count();
        assert_eq!(
            accepted, 1,
            "round {round}: policy {} {}, config map {} {}",
            first.status, first.body, second.status, second.body
        );
        for path in [
            "/api/v1/resources/ExtAuthPolicy/demo/admin",
            "/api/v1/resources/ConfigMap/demo/policy",
        ] {
            let response = admin.request("DELETE", path, None).await.unwrap();
            assert!(matches!(response.status, 200 | 404), "{path}: {}", response.body);
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whoever may edit RBAC objects or issue tokens still cannot give anyone (itself included) more
/// than it holds; cluster registration cannot be turned into rotation; a cluster is not deleted
/// behind its certificates' back.
#[tokio::test(flavor = "multi_thread")]
async fn nobody_grants_more_than_they_hold() {
    let dir = test_dir("api-escalation");
    let server = MgmtProcess::start(&dir, &[]).await;
    let admin = server.api();
    let api_ca = server.data_dir.join("pki/api-ca.pem");
    // Bob manages RoleBindings and routes in team-a, and may issue API tokens.
    let setup = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: binder, namespace: team-a}\nrules:\n- {apiGroups: [rbac.authorization.k8s.io], resources: [rolebindings], verbs: ['*']}\n- {apiGroups: [networking.gloo.solo.io], resources: [routetables], verbs: ['*']}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob, namespace: team-a}\nroleRef: {kind: Role, name: binder}\nsubjects: [{kind: User, name: bob}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: token-issuer}\nrules: [{apiGroups: [trellis.io], resources: [apitokens], verbs: [create]}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: bob-tokens}\nroleRef: {kind: ClusterRole, name: token-issuer}\nsubjects: [{kind: User, name: bob}]\n";
    assert_eq!(apply(&admin, setup).await.status, 200);
    let bob = with_token(
        &admin,
        &api_ca,
        Some(&issue_token(&admin, "bob", "bob", &["team-a-devs"]).await),
    );

    let to_admin = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-admin, namespace: team-a}\nroleRef: {kind: ClusterRole, name: trellis-admin}\nsubjects: [{kind: User, name: bob}]\n";
    let refused = apply(&bob, to_admin).await;
    assert_eq!(refused.status, 403, "bob bound himself to admin: {}", refused.body);
    assert!(
        refused.body.contains("may not grant what it does not hold"),
        "{}",
        refused.body
    );
    // What he holds he may hand on, in his namespace.
    let routes_role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: routes, namespace: team-a}\nrules: [{apiGroups: [networking.gloo.solo.io], resources: [routetables], verbs: [get]}]\n";
    assert_eq!(apply(&admin, routes_role).await.status, 200);
    let hand_on = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: carol-routes, namespace: team-a}\nroleRef: {kind: Role, name: routes}\nsubjects: [{kind: User, name: carol}]\n";
    let granted = apply(&bob, hand_on).await;
    assert_eq!(granted.status, 200, "{}", granted.body);

    // Tokens: only for himself and his own groups.
    for (user, groups) in [
        ("root", vec![]),
        ("bob", vec!["ops"]),
        ("bob", vec!["trellis:admins"]),
        ("bob", vec!["oidc:admins"]),
    ] {
        let response = bob
            .post_json(
                "/api/v1/tokens",
                &json!({"name": format!("t-{}", groups.len()), "user": user, "groups": groups}),
            )
            .await
            .unwrap();
        assert!(
            matches!(response.status, 400 | 403),
            "{user} {groups:?}: {}",
            response.body
        );
    }
    let own = bob
        .post_json(
            "/api/v1/tokens",
            &json!({"name": "bob-ci", "user": "bob", "groups": ["team-a-devs"]}),
        )
        .await
        .unwrap();
    assert_eq!(own.status, 200, "{}", own.body);
    let expires = serde_json::from_str::<Value>(&own.body).unwrap()["expiresAt"].as_u64();
    assert!(expires.is_some(), "a token without ttl never expires: {}", own.body);

    // Registration is not rotation, and a cluster goes only through deregister.
    assert_eq!(
        admin
            .request("POST", "/api/v1/clusters/c1/register", None)
            .await
            .unwrap()
            .status,
        200
    );
    let rotate = admin
        .request("POST", "/api/v1/clusters/c1/register?rotate=true", None)
        .await
        .unwrap();
    assert_eq!(rotate.status, 400, "{}", rotate.body);
    let delete = admin
        .request("DELETE", "/api/v1/resources/KubernetesCluster/trellis/c1", None)
        .await
        .unwrap();
    assert_eq!(delete.status, 400, "{}", delete.body);
    assert!(delete.body.contains("trellis cluster deregister c1"), "{}", delete.body);
    // Unknown routes and HEAD do not slip past authorization.
    let viewer = with_token(&admin, &api_ca, Some(&issue_token(&admin, "v", "v", &[]).await));
    assert_eq!(
        viewer
            .request("HEAD", "/api/v1/translation", None)
            .await
            .unwrap()
            .status,
        403
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
