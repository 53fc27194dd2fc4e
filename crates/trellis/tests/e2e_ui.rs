//! The web UI, end to end: Debian's chromium (driven by playwright-core, see
//! crates/testkit/ui-browser/browse.mjs) logs in through a real OpenID provider (the
//! `oidc-provider` npm package), lands on the overview, opens a FAILED resource and reads why,
//! finds it among the insights with its fix, and watches the service graph's live rates, which
//! the management server reads from a real Prometheus scraping the agents' merged proxy stats.
//! Without login the page sends the browser to the provider and the API answers 401.
//!
//! The session test plays the browser with plain HTTP: sessions kept in Redis survive a restart
//! of the management server, a cookie alone cannot change state (CSRF), and logout ends it.

use trellis_testkit as common;

use std::path::Path;
use std::time::Duration;

use common::oidc_provider::OidcProvider;
use common::*;
use serde_json::Value;
use trellis_support::httpc::HttpClient;

const CLIENT_ID: &str = "trellis-ui";
const CLIENT_SECRET: &str = "ui-test-secret";

fn secret_file(dir: &Path) -> String {
    let path = dir.join("client-secret");
    trellis_support::files::write_private(&path, CLIENT_SECRET).unwrap();
    path.display().to_string()
}

fn viewer_binding(user: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {user}-views}}\n\
         roleRef: {{kind: ClusterRole, name: trellis-viewer}}\nsubjects: [{{kind: User, name: 'oidc:{user}'}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_with_oidc_and_sees_the_mesh_in_a_browser() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/ui-browser");
    assert!(
        browser_dir.join("node_modules/playwright-core/package.json").is_file(),
        "playwright-core is not installed in {}: run scripts/setup",
        browser_dir.display()
    );
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "chromium is not installed: scripts/setup installs Debian's package"
    );
    let dir = test_dir("ui-browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = trellis_cli::up::MeshOptions::free();
    let ui = format!("https://127.0.0.1:{}", options.api);
    let provider = OidcProvider::start(&dir.join("idp"), CLIENT_ID, CLIENT_SECRET, &format!("{ui}/ui/callback")).await;
    let (_redis, redis_port) = start_redis(&dir.join("redis"), &[], None).await;
    // Prometheus needs the mesh's ports and the mesh the Prometheus URL: reserve its port.
    let prometheus_port = trellis_support::process::free_port();
    options.mgmt_flags = [
        "--oidc-issuer",
        &provider.issuer,
        "--oidc-audience",
        CLIENT_ID,
        "--oidc-client-secret-file",
        &secret_file(&dir),
        "--ui-session-redis",
        &format!("redis://127.0.0.1:{redis_port}/0"),
        "--prometheus-url",
        &format!("http://127.0.0.1:{prometheus_port}"),
    ]
    .map(String::from)
    .to_vec();
    let mesh = demo_mesh_with("ui", options).await;
    let _prometheus = common::prometheus::Prometheus::scrape_on(&mesh, prometheus_port);
    let applied = mesh.apply("ui-test", &viewer_binding("uma")).await.unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);
    let applied = mesh.apply("ui-test", CONFLICTING_RETRY_POLICIES).await.unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);

    let traffic = {
        let url = format!("http://127.0.0.1:{}/", mesh.app("frontend").app_port);
        tokio::spawn(async move {
            loop {
                let _ = trellis_support::httpc::get(&url, Duration::from_secs(5)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let shots = dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("browse.mjs"))
        .current_dir(&browser_dir)
        .env("UI_URL", &ui)
        .env("LOGIN", "uma")
        .env("ISSUER", &provider.issuer)
        .env("FAILED", "RetryTimeoutPolicy/demo/backend-timeout-again")
        .env("WHY", "an older RetryTimeoutPolicy already applies")
        .env("GRAPH_NODES", "frontend,backend")
        .env("SHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("the browser finished within 240 s")
        .expect("node runs");
    traffic.abort();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{printed}");
    assert!(
        output.status.success(),
        "the browser's walk through the UI failed:\n{printed}"
    );
    for shot in ["overview.png", "failed-resource.png", "insights.png", "graph.png"] {
        let size = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
    // Kept for the README when asked (TRELLIS_UI_SHOTS=<dir>).
    if let Ok(keep) = std::env::var("TRELLIS_UI_SHOTS") {
        for shot in ["overview.png", "failed-resource.png", "insights.png", "graph.png"] {
            std::fs::copy(shots.join(shot), Path::new(&keep).join(shot)).unwrap();
        }
    }
    finish(mesh).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Follows the UI's login as a browser would, with plain HTTP: returns the session cookie.
async fn log_in(http: &HttpClient, server: &str, provider: &OidcProvider, user: &str) -> String {
    let start = http
        .get(&format!("{server}/ui/"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(start.status, 302, "{}", start.body);
    let state_cookie = cookie_pair(&start);
    let back = provider.login(start.header("location").unwrap(), user).await;
    let path = back
        .split_once("/ui/callback")
        .map(|(_, rest)| format!("/ui/callback{rest}"))
        .unwrap();
    let done = http
        .request(
            "GET",
            &format!("{server}{path}"),
            None,
            &[("cookie", &state_cookie)],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(done.status, 302, "{}", done.body);
    let session = done
        .headers
        .iter()
        .filter(|(k, v)| {
            k.eq_ignore_ascii_case("set-cookie")
                && v.starts_with("trellis_session=")
                && !v.starts_with("trellis_session=;")
        })
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .next()
        .expect("a session cookie");
    let attributes = done.header("set-cookie").unwrap_or_default().to_ascii_lowercase();
    assert!(
        done.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("set-cookie")
            && v.to_ascii_lowercase().contains("httponly")
            && v.to_ascii_lowercase().contains("secure")),
        "{attributes}"
    );
    session
}

fn cookie_pair(response: &trellis_support::httpc::Response) -> String {
    response
        .header("set-cookie")
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string()
}

async fn whoami(http: &HttpClient, server: &str, cookie: &str) -> (u16, Value) {
    let response = http
        .request(
            "GET",
            &format!("{server}/api/v1/whoami"),
            None,
            &[("cookie", cookie)],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    (
        response.status,
        serde_json::from_str(&response.body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ui_sessions_in_redis_survive_a_restart_and_end_at_logout() {
    let dir = test_dir("ui-sessions");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = trellis_support::process::free_port();
    let server_url = format!("https://127.0.0.1:{api}");
    let provider = OidcProvider::start(
        &dir.join("idp"),
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("{server_url}/ui/callback"),
    )
    .await;
    let (_redis, redis_port) = start_redis(&dir.join("redis"), &[], None).await;
    let secret = secret_file(&dir);
    let redis = format!("redis://127.0.0.1:{redis_port}/0");
    let mut server = MgmtProcess::start_on(
        &dir,
        api,
        &[
            "--oidc-issuer",
            &provider.issuer,
            "--oidc-audience",
            CLIENT_ID,
            "--oidc-client-secret-file",
            &secret,
            "--ui-session-redis",
            &redis,
        ],
    )
    .await;
    let applied = server
        .api()
        .request(
            "POST",
            "/api/v1/apply?source=ui-test",
            Some(("application/yaml", viewer_binding("sam").into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(applied.status, 200, "{}", applied.body);
    let http = HttpClient::with_ca_files(&[server.data_dir.join("pki/api-ca.pem")]).unwrap();

    // No session: the page redirects to the provider, the API refuses, a made-up cookie too.
    let page = http
        .get(&format!("{server_url}/ui/"), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        page.header("location")
            .unwrap_or_default()
            .starts_with(&provider.issuer),
        "{:?}",
        page.headers
    );
    assert_eq!(whoami(&http, &server_url, "").await.0, 401);
    let forged = format!("trellis_session={}", "A".repeat(43));
    assert_eq!(whoami(&http, &server_url, &forged).await.0, 401);

    let session = log_in(&http, &server_url, &provider, "sam").await;
    let (status, me) = whoami(&http, &server_url, &session).await;
    assert_eq!((status, me["user"].as_str()), (200, Some("oidc:sam")), "{me}");
    assert_eq!(me["authenticatedBy"], "oidc-session");

    // A cookie alone cannot change state: another site's form could send it.
    let csrf = http
        .request(
            "POST",
            &format!("{server_url}/api/v1/apply?source=ui"),
            None,
            &[("cookie", &session)],
            Some(("application/yaml", viewer_binding("mallory").into_bytes())),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(csrf.status, 401, "{}", csrf.body);
    // With the UI's header it is an ordinary request of a viewer: authorized by RBAC, refused.
    let viewer_write = http
        .request(
            "POST",
            &format!("{server_url}/api/v1/apply?source=ui"),
            None,
            &[("cookie", &session), ("x-trellis-ui", "1")],
            Some(("application/yaml", viewer_binding("mallory").into_bytes())),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(viewer_write.status, 403, "{}", viewer_write.body);

    server.restart().await;
    let (status, me) = whoami(&http, &server_url, &session).await;
    assert_eq!(status, 200, "the Redis session outlives the restart: {me}");

    let logout = http
        .request(
            "GET",
            &format!("{server_url}/ui/logout"),
            None,
            &[("cookie", &session)],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(logout.status, 302);
    assert!(
        logout
            .header("location")
            .unwrap_or_default()
            .ends_with("/ui/signed-out")
    );
    assert_eq!(
        whoami(&http, &server_url, &session).await.0,
        401,
        "the session ended at logout"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ui_pages_carry_no_data_and_the_graph_needs_credentials() {
    let dir = test_dir("ui-pages");
    let server = MgmtProcess::start(&dir, &[]).await;
    let http = HttpClient::with_ca_files(&[server.data_dir.join("pki/api-ca.pem")]).unwrap();
    let root = http
        .get(&format!("{}/", server.url), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((root.status, root.header("location")), (303, Some("/ui/")));
    let page = http
        .get(&format!("{}/ui/", server.url), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-security-policy")
            .unwrap_or_default()
            .contains("default-src 'self'")
    );
    assert!(
        page.body.contains("/ui/app.js") && !page.body.contains("cluster-"),
        "{}",
        page.body
    );
    let mode = http
        .get(&format!("{}/ui/login.json", server.url), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(mode.body, r#"{"login":"token"}"#);
    for path in ["/api/v1/graph", "/api/v1/whoami"] {
        let refused = http
            .get(&format!("{}{path}", server.url), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
    }
    let graph = server.get_json("/api/v1/graph").await;
    assert!(
        graph["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--prometheus-url"),
        "{graph}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
