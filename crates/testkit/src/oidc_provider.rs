//! A real OpenID provider for tests: the `oidc-provider` npm package run by
//! `crates/testkit/oidc-provider/provider.mjs` on a loopback ephemeral port, with one confidential client.
//! [`OidcProvider::login`] plays the browser at the provider: it follows redirects with a cookie
//! jar and submits the development login and consent forms, up to the redirect back to the
//! client's `redirect_uri`. Killed on drop, its directory removed unless the test failed.
//!
//! scripts/setup installs the npm package (`npm ci` in crates/testkit/oidc-provider).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OidcProvider {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:<port>`, as the provider names itself.
    pub issuer: String,
    pub redirect_uri: String,
    dir: PathBuf,
    log: PathBuf,
}

impl OidcProvider {
    pub async fn start(dir: &Path, client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcProvider {
        let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc-provider");
        assert!(
            script_dir.join("node_modules/oidc-provider/package.json").is_file(),
            "the oidc-provider npm package is not installed in {}: run scripts/setup",
            script_dir.display()
        );
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("provider.log");
        let file = std::fs::File::create(&log).unwrap();
        let port = trellis_support::process::free_port();
        let child = Command::new("node")
            .arg(script_dir.join("provider.mjs"))
            .current_dir(&script_dir)
            .env("PORT", port.to_string())
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node: {e} (install Node.js 20.19+, then run scripts/setup)"));
        let mut provider = OidcProvider {
            child: Some(child),
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            redirect_uri: redirect_uri.to_string(),
            dir: dir.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = provider.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the OpenID provider exited with {status}: {}", provider.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the OpenID provider did not listen within 20s: {}",
                provider.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        provider
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Logs `user` in at the provider, starting from the authorization URL the relying party
    /// redirected to; returns the URL the provider redirects back to (`redirect_uri?code=...`).
    pub async fn login(&self, authorization_url: &str, user: &str) -> String {
        let mut jar: BTreeMap<String, String> = BTreeMap::new();
        let mut next = Request::Get(authorization_url.to_string());
        for _ in 0..12 {
            let (method, url, body) = match &next {
                Request::Get(url) => ("GET", url.clone(), None),
                Request::Post(url, form) => (
                    "POST",
                    url.clone(),
                    Some(("application/x-www-form-urlencoded", form.clone().into_bytes())),
                ),
            };
            let cookies = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let mut headers = vec![("accept", "text/html")];
            if !cookies.is_empty() {
                headers.push(("cookie", cookies.as_str()));
            }
            let response = trellis_support::httpc::request(method, &url, None, &headers, body, Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
            for (name, value) in &response.headers {
                if name.eq_ignore_ascii_case("set-cookie") {
                    let pair = value.split(';').next().unwrap_or_default();
                    if let Some((k, v)) = pair.split_once('=') {
                        if v.is_empty() {
                            jar.remove(k.trim());
                        } else {
                            jar.insert(k.trim().to_string(), v.trim().to_string());
                        }
                    }
                }
            }
            next = match response.status {
                302 | 303 => {
                    let location = response.header("location").expect("redirect without location");
                    if location.starts_with(&self.redirect_uri) {
                        return location.to_string();
                    }
                    Request::Get(self.absolute(location))
                }
                200 => {
                    let action = between(&response.body, "action=\"", "\"").expect("a page without a form");
                    let prompt =
                        between(&response.body, "name=\"prompt\" value=\"", "\"").expect("a form without prompt");
                    let form = match prompt {
                        "login" => format!("prompt=login&login={user}&password=any"),
                        "consent" => "prompt=consent".to_string(),
                        other => panic!("unexpected interaction {other:?}"),
                    };
                    Request::Post(self.absolute(action), form)
                }
                status => panic!(
                    "{method} {url} answered {status}: {}\n{}",
                    response.body,
                    self.log_text()
                ),
            };
        }
        panic!("no redirect to {} after 12 steps", self.redirect_uri)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") {
            location.to_string()
        } else {
            format!("{}{location}", self.issuer)
        }
    }
}

impl Drop for OidcProvider {
    /// Stops the provider; its directory stays when the test failed, for the log.
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

enum Request {
    Get(String),
    Post(String, String),
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}
