//! The ext-auth LDAP module against a real OpenLDAP slapd (memberof overlay): group members pass
//! with their user id, other users get 403, bad credentials and DN injection get 401, and a
//! directory that is down denies (fail closed).
//!
//! Needs slapd and ldap-utils: run scripts/setup.

use trellis_testkit::slapd;

use base64::Engine;
use slapd::Slapd;
use trellis_ext_auth_server::ldap::Ldap;
use trellis_extauth::{CheckInput, Outcome};

fn test_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("trellis-extauth-ldap-{name}-{}", std::process::id()))
}

fn mk_ldap(server: &Slapd, extra: serde_json::Value) -> Ldap {
    let mut config = serde_json::json!({
        "address": server.url(),
        "userDnTemplate": slapd::USER_DN_TEMPLATE,
        "allowedGroups": [slapd::DEVELOPERS],
        "pool": {"maxSize": 2, "initialSize": 1},
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    Ldap::from_config(&config).unwrap()
}

fn mk_input(authorization: Option<&str>) -> CheckInput {
    let mut input = CheckInput {
        method: "GET".into(),
        scheme: "http".into(),
        host: "app.example".into(),
        path: "/".into(),
        ..CheckInput::default()
    };
    if let Some(value) = authorization {
        input.headers.insert("authorization".into(), value.into());
    }
    input
}

fn basic(user: &str, password: &str) -> String {
    basic_raw(format!("{user}:{password}").as_bytes())
}

fn basic_raw(raw: &[u8]) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

async fn check(ldap: &Ldap, user: &str, password: &str) -> Outcome {
    ldap.check(&mk_input(Some(&basic(user, password)))).await
}

fn allowed_as(user: &str) -> Outcome {
    Outcome::Allow {
        upstream_headers: vec![("x-user-id".into(), user.into())],
    }
}

fn challenge() -> Outcome {
    Outcome::Deny {
        status: 401,
        headers: vec![("www-authenticate".into(), "Basic realm=\"ldap\"".into())],
        body: String::new(),
    }
}

#[tokio::test]
async fn group_members_pass_with_their_directory_user_id() {
    let server = Slapd::start(&test_dir("members")).await;
    let ldap = mk_ldap(&server, serde_json::json!({}));
    // `dan,jr` binds only if the comma is escaped into the DN (uid=dan\2Cjr); ALICE matches
    // uid=alice case-insensitively and is reported as the directory spells it.
    let cases = [
        ("alice", "alicepwd", "alice"),
        ("dan,jr", "danpwd", "dan,jr"),
        ("ALICE", "alicepwd", "alice"),
    ];
    for (user, password, id) in cases {
        assert_eq!(check(&ldap, user, password).await, allowed_as(id), "{user}");
    }
}

#[tokio::test]
async fn authenticated_user_outside_allowed_groups_gets_403() {
    let server = Slapd::start(&test_dir("outside")).await;
    let ldap = mk_ldap(&server, serde_json::json!({}));
    // bob is a member of sales (his entry has a memberOf), just not of developers.
    assert_eq!(check(&ldap, "bob", "bobpwd").await, Outcome::deny(403));
    // Allowing sales lets him in, so the 403 above came from the group check.
    let sales = mk_ldap(&server, serde_json::json!({"allowedGroups": [slapd::SALES]}));
    assert_eq!(check(&sales, "bob", "bobpwd").await, allowed_as("bob"));
    assert_eq!(check(&sales, "alice", "alicepwd").await, Outcome::deny(403));
}

#[tokio::test]
async fn bad_or_missing_credentials_get_401_with_a_basic_challenge_and_no_detail() {
    let server = Slapd::start(&test_dir("credentials")).await;
    let ldap = mk_ldap(&server, serde_json::json!({}));
    let headers = [
        Some(basic("alice", "wrong")),
        Some(basic("carol", "alicepwd")),
        // An empty password would be an unauthenticated bind, which LDAP lets succeed.
        Some(basic("alice", "")),
        Some(basic("", "alicepwd")),
        Some(basic("alice\0", "alicepwd")),
        Some(basic_raw(b"\xffalice:alicepwd")),
        Some("Basic not-base64!".into()),
        Some("Bearer abc".into()),
        Some(String::new()),
        None,
    ];
    for header in headers {
        assert_eq!(
            ldap.check(&mk_input(header.as_deref())).await,
            challenge(),
            "{header:?}"
        );
    }
    // The same ldap instance still lets a good user in after all those failed binds.
    assert_eq!(check(&ldap, "alice", "alicepwd").await, allowed_as("alice"));
}

#[tokio::test]
async fn dn_injection_in_the_user_name_cannot_bind_as_someone_else() {
    let server = Slapd::start(&test_dir("injection")).await;
    let ldap = mk_ldap(&server, serde_json::json!({}));
    let names = [
        "alice)(uid=*",
        "*",
        "alice,ou=people",
        "alice,ou=people,dc=example,dc=org",
        "uid=alice,ou=people,dc=example,dc=org",
        "alice+cn=Alice",
        "\\61lice",
        "alice\\",
        "#616c696365",
    ];
    for name in names {
        for password in ["alicepwd", "bobpwd", "x"] {
            assert_eq!(check(&ldap, name, password).await, challenge(), "{name:?} / {password}");
        }
    }
}

#[tokio::test]
async fn disabled_group_checking_lets_any_authenticated_user_through() {
    let server = Slapd::start(&test_dir("no-groups")).await;
    let ldap = mk_ldap(
        &server,
        serde_json::json!({"allowedGroups": [], "disableGroupChecking": true}),
    );
    assert_eq!(check(&ldap, "bob", "bobpwd").await, allowed_as("bob"));
    assert_eq!(check(&ldap, "bob", "wrong").await, challenge());
}

#[tokio::test]
async fn directory_down_denies_with_503_for_pooled_and_new_connections() {
    let mut server = Slapd::start(&test_dir("down")).await;
    let ldap = mk_ldap(&server, serde_json::json!({}));
    // Leaves a bound connection in the pool.
    assert_eq!(check(&ldap, "alice", "alicepwd").await, allowed_as("alice"));
    server.stop().await;
    let started = std::time::Instant::now();
    assert_eq!(check(&ldap, "alice", "alicepwd").await, Outcome::deny(503));
    assert_eq!(check(&ldap, "alice", "wrong").await, Outcome::deny(503));
    let fresh = mk_ldap(&server, serde_json::json!({}));
    assert_eq!(check(&fresh, "alice", "alicepwd").await, Outcome::deny(503));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(6),
        "each check is bounded by its timeout: {:?}",
        started.elapsed()
    );
}
