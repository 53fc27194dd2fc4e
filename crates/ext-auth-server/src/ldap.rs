//! Gloo's `ldap` auth type: HTTP Basic credentials checked by binding to an LDAP server as the
//! user, then group membership read from the user's own entry.
//!
//! ```text
//! Authorization: Basic alice:pw ──► DN = userDnTemplate with "%s" = RFC 4514-escaped "alice"
//!        │                             │
//!        │                     simple bind (DN, pw) ── fails ──► 401 + WWW-Authenticate
//!        │                             │ ok
//!        │                     base search of DN with searchFilter, reading membershipAttributeName
//!        │                             │
//!        └── allow + x-user-id ◄── any value is one of allowedGroups (DN, case-insensitive); else 403
//! ```
//!
//! The directory is expected to keep memberships on the user entry (`memberOf`, e.g. from
//! OpenLDAP's memberof overlay), as Gloo does. The server being unreachable or failing denies
//! with 503 (fail closed; see [`Ldap::check`]).
//!
//! Connections: binding as the user changes the connection's identity, so a connection serves
//! one check at a time. Idle connections are kept in a small pool (`pool.maxSize`, default 5)
//! instead of paying TCP (and TLS) set-up per request; every check starts with its own bind, so
//! nothing of the previous user's identity carries over (a failed bind leaves the connection
//! anonymous, RFC 4511 §4.2.1). When the pool is empty a new connection is opened, as in Gloo.
//! `pool.initialSize` is accepted but connections open on demand: building the config (which the
//! management server may do to validate it) has no side effects.
//!
//! `ldaps://` addresses use TLS (rustls, the system's root certificates).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use serde::Deserialize;
use serde_json::Value;
use trellis_extauth::{CheckInput, Outcome};

/// Connecting to the server, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Each LDAP operation (bind, search).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(1);
/// The whole check, retry included; below Envoy's default ext_authz timeout (2s) so the client
/// gets this module's answer rather than Envoy's.
const CHECK_TIMEOUT: Duration = Duration::from_millis(1800);
/// Longer user names or passwords are refused before any LDAP traffic.
const MAX_CREDENTIAL_LEN: usize = 1024;

// LDAP result codes (RFC 4511 appendix A) that mean "these credentials do not authenticate".
const NO_SUCH_OBJECT: u32 = 32;
const INVALID_DN_SYNTAX: u32 = 34;
const INAPPROPRIATE_AUTHENTICATION: u32 = 48;
const INVALID_CREDENTIALS: u32 = 49;
const UNWILLING_TO_PERFORM: u32 = 53;

/// A compiled `ldap` auth config.
pub struct Ldap {
    url: String,
    /// The user DN template split at its single `%s`.
    dn_prefix: String,
    dn_suffix: String,
    /// The attribute of the template's first RDN (`uid` in `uid=%s,...`), read to report the
    /// directory's spelling of the user name.
    rdn_attribute: Option<String>,
    membership_attribute: String,
    /// Lowercase, normalized with [`normalize_dn`].
    allowed_groups: Vec<String>,
    group_checking: bool,
    search_filter: String,
    pool_max: usize,
    idle: Mutex<Vec<ldap3::Ldap>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LdapConfig {
    address: String,
    user_dn_template: String,
    #[serde(default)]
    membership_attribute_name: Option<String>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    #[serde(default)]
    pool: Option<PoolConfig>,
    #[serde(default)]
    search_filter: Option<String>,
    #[serde(default)]
    disable_group_checking: bool,
    /// Gloo's service account for group lookups: not implemented, refused by name.
    #[serde(default)]
    group_lookup_settings: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PoolConfig {
    #[serde(default)]
    max_size: Option<u32>,
    /// Accepted for Gloo compatibility; connections open on demand (see the module docs).
    #[serde(default)]
    #[allow(dead_code)]
    initial_size: Option<u32>,
}

/// What the directory says about an authenticated user.
struct UserEntry {
    groups: Vec<String>,
    /// The directory's value of the RDN attribute matching the name given, if any.
    name: Option<String>,
}

/// Why no decision could be made from the directory.
#[derive(Debug, thiserror::Error)]
enum DirectoryError {
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: LdapError,
    },
    #[error("LDAP {operation} failed: {source}")]
    Operation {
        operation: &'static str,
        #[source]
        source: LdapError,
    },
    #[error("LDAP server sent an entry that cannot be parsed")]
    BadEntry,
}

// === impl Ldap ===

impl Ldap {
    /// Compiles Gloo's `ldap` object. Errors name the field and what to write instead.
    pub fn from_config(config: &Value) -> anyhow::Result<Ldap> {
        let config = LdapConfig::deserialize(config).context("ldap")?;
        if config.group_lookup_settings.is_some() {
            bail!("ldap.groupLookupSettings: group lookup with a service account is not supported");
        }
        let url = server_url(&config.address)?;
        let template = config.user_dn_template.as_str();
        if template.matches("%s").count() != 1 {
            bail!(
                "ldap.userDnTemplate: {template:?} must contain \"%s\" exactly once, e.g. \"uid=%s,ou=people,dc=example,dc=org\""
            );
        }
        let (dn_prefix, dn_suffix) = template.split_once("%s").unwrap_or_default();
        let rdn_attribute = dn_prefix
            .strip_suffix('=')
            .filter(|attr| !attr.is_empty() && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .map(str::to_string);
        let membership_attribute = match config.membership_attribute_name.as_deref().map(str::trim) {
            None | Some("") => "memberOf".to_string(),
            Some(name) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';') => name.to_string(),
            Some(name) => bail!("ldap.membershipAttributeName: {name:?} is not an attribute name"),
        };
        if config.allowed_groups.is_empty() && !config.disable_group_checking {
            bail!("ldap.allowedGroups: empty, so no user could pass; list group DNs or set disableGroupChecking");
        }
        // Gloo's default filter.
        let search_filter = config.search_filter.unwrap_or_default();
        let search_filter = match search_filter.trim() {
            "" => "(uid=*)".to_string(),
            f if f.starts_with('(') && f.ends_with(')') => f.to_string(),
            f => bail!("ldap.searchFilter: {f:?} is not an LDAP filter such as \"(objectClass=person)\""),
        };
        let pool_max = config.pool.as_ref().and_then(|p| p.max_size).unwrap_or(5) as usize;
        Ok(Ldap {
            url,
            dn_prefix: dn_prefix.to_string(),
            dn_suffix: dn_suffix.to_string(),
            rdn_attribute,
            membership_attribute,
            allowed_groups: config.allowed_groups.iter().map(|g| normalize_dn(g)).collect(),
            group_checking: !config.disable_group_checking,
            search_filter,
            pool_max,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Decides one request. 401 (with a Basic challenge) for missing, malformed or wrong
    /// credentials, without saying which; 403 for a valid user outside `allowedGroups`.
    ///
    /// When the directory cannot answer, 503: not 401, which would make a browser ask again for
    /// credentials that may well be right, and not 403, which would tell a user they lack
    /// permissions they may have. Either way nothing is let through (fail closed).
    pub async fn check(&self, input: &CheckInput) -> Outcome {
        let Some((user, password)) = basic_credentials(input) else {
            return unauthorized();
        };
        let dn = self.user_dn(&user);
        let entry = match tokio::time::timeout(CHECK_TIMEOUT, self.authenticate(&dn, &user, &password)).await {
            Ok(Ok(Some(entry))) => entry,
            Ok(Ok(None)) => return unauthorized(),
            Ok(Err(error)) => {
                tracing::warn!(%error, url = %self.url, "ldap: directory unavailable, denying");
                return Outcome::deny(503);
            }
            Err(_) => {
                tracing::warn!(url = %self.url, timeout = ?CHECK_TIMEOUT, "ldap: directory did not answer in time, denying");
                return Outcome::deny(503);
            }
        };
        if self.group_checking
            && !entry
                .groups
                .iter()
                .any(|g| self.allowed_groups.contains(&normalize_dn(g)))
        {
            return Outcome::deny(403);
        }
        Outcome::Allow {
            upstream_headers: vec![("x-user-id".to_string(), entry.name.unwrap_or(user))],
        }
    }

    fn user_dn(&self, user: &str) -> String {
        format!("{}{}{}", self.dn_prefix, ldap3::dn_escape(user), self.dn_suffix)
    }

    /// `Ok(None)`: the credentials do not authenticate. A pooled connection that fails is
    /// dropped and the check retried once on a fresh one (the server may have restarted).
    async fn authenticate(&self, dn: &str, user: &str, password: &str) -> Result<Option<UserEntry>, DirectoryError> {
        if let Some(conn) = self.take_idle()
            && let Ok(answer) = self.bind_and_read(conn, dn, user, password).await
        {
            return Ok(answer);
        }
        let (conn, driver) =
            LdapConnAsync::with_settings(LdapConnSettings::new().set_conn_timeout(CONNECT_TIMEOUT), &self.url)
                .await
                .map_err(|source| DirectoryError::Connect {
                    url: self.url.clone(),
                    source,
                })?;
        ldap3::drive!(conn);
        self.bind_and_read(driver, dn, user, password).await
    }

    /// Binds as the user and reads their entry; the connection goes back to the pool unless an
    /// operation failed on it.
    async fn bind_and_read(
        &self,
        mut conn: ldap3::Ldap,
        dn: &str,
        user: &str,
        password: &str,
    ) -> Result<Option<UserEntry>, DirectoryError> {
        let bind = conn
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(dn, password)
            .await
            .map_err(|source| DirectoryError::Operation {
                operation: "bind",
                source,
            })?;
        match bind.rc {
            0 => {}
            NO_SUCH_OBJECT
            | INVALID_DN_SYNTAX
            | INAPPROPRIATE_AUTHENTICATION
            | INVALID_CREDENTIALS
            | UNWILLING_TO_PERFORM => {
                self.put_idle(conn);
                return Ok(None);
            }
            _ => {
                return Err(DirectoryError::Operation {
                    operation: "bind",
                    source: LdapError::from(bind),
                });
            }
        }
        let mut attributes = vec![self.membership_attribute.as_str()];
        attributes.extend(self.rdn_attribute.as_deref());
        let search = conn
            .with_timeout(OPERATION_TIMEOUT)
            .search(dn, Scope::Base, &self.search_filter, attributes)
            .await
            .map_err(|source| DirectoryError::Operation {
                operation: "search",
                source,
            })?;
        // An entry the filter excludes, or that the user may not read, has no groups.
        let entries = match search.success() {
            Ok((entries, _)) => entries,
            Err(LdapError::LdapResult { result }) if result.rc == NO_SUCH_OBJECT => Vec::new(),
            Err(source) => {
                return Err(DirectoryError::Operation {
                    operation: "search",
                    source,
                });
            }
        };
        self.put_idle(conn);
        let mut found = UserEntry {
            groups: Vec::new(),
            name: None,
        };
        for entry in entries {
            // ldap3 panics on an entry it cannot parse; a broken server must not take us down.
            let entry = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(entry)))
                .map_err(|_| DirectoryError::BadEntry)?;
            for (name, values) in entry.attrs {
                if name.eq_ignore_ascii_case(&self.membership_attribute) {
                    found.groups.extend(values);
                } else if self
                    .rdn_attribute
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&name))
                {
                    found.name = values.into_iter().find(|v| v.to_lowercase() == user.to_lowercase());
                }
            }
        }
        Ok(Some(found))
    }

    fn take_idle(&self) -> Option<ldap3::Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: ldap3::Ldap) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.pool_max {
            idle.push(conn);
        }
    }
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.url)
            .field("user_dn_template", &format!("{}%s{}", self.dn_prefix, self.dn_suffix))
            .field("membership_attribute", &self.membership_attribute)
            .field("allowed_groups", &self.allowed_groups)
            .finish_non_exhaustive()
    }
}

// === helpers ===

/// Gloo writes `host:port`; an `ldap://` or `ldaps://` URL is taken as it is.
fn server_url(address: &str) -> anyhow::Result<String> {
    let address = address.trim();
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("ldap://{address}")
    };
    let rest = url
        .strip_prefix("ldap://")
        .or_else(|| url.strip_prefix("ldaps://"))
        .with_context(|| format!("ldap.address: {address:?}: use host:port, ldap://host:port or ldaps://host:port"))?;
    if rest.trim_end_matches('/').is_empty() || rest.trim_end_matches('/').contains(['/', '?', ' ']) {
        bail!("ldap.address: {address:?}: use host:port, ldap://host:port or ldaps://host:port");
    }
    Ok(url)
}

/// The user name and password of an `Authorization: Basic` header, or `None` for anything
/// that is not a usable pair. An empty password is refused here: to LDAP it would be an
/// unauthenticated bind, which succeeds without proving anything (RFC 4513 §5.1.2).
fn basic_credentials(input: &CheckInput) -> Option<(String, String)> {
    let value = trellis_extauth::header(input, "authorization")?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 4 * MAX_CREDENTIAL_LEN {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    let usable = |s: &str| !s.is_empty() && s.len() <= MAX_CREDENTIAL_LEN && !s.chars().any(char::is_control);
    // Surrounding spaces are insignificant to most LDAP matching rules: "alice " would bind as
    // alice but be reported upstream as another name.
    if !usable(user) || !usable(password) || user.trim() != user {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}

fn unauthorized() -> Outcome {
    Outcome::Deny {
        status: 401,
        headers: vec![("www-authenticate".to_string(), "Basic realm=\"ldap\"".to_string())],
        body: String::new(),
    }
}

/// For comparing group DNs: lowercase, without spaces after RDN separators
/// (`cn=Dev, ou=Groups` equals `cn=dev,ou=groups`).
fn normalize_dn(dn: &str) -> String {
    let lower = dn.trim().to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut after_comma = false;
    for c in lower.chars() {
        if after_comma && c == ' ' {
            continue;
        }
        after_comma = c == ',';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_with(authorization: Option<&str>) -> CheckInput {
        let mut input = CheckInput::default();
        if let Some(value) = authorization {
            input.headers.insert("authorization".into(), value.into());
        }
        input
    }

    fn basic(raw: &[u8]) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }

    #[test]
    fn basic_credentials_refuses_what_cannot_be_a_bind() {
        type Case = (Option<String>, Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (Some(basic(b"alice:pw")), Some(("alice", "pw"))),
            (Some(basic(b"alice:p:w")), Some(("alice", "p:w"))),
            (Some(format!("basic {}", &basic(b"a:b")[6..])), Some(("a", "b"))),
            (None, None),
            (Some(basic(b"alice:")), None),
            (Some(basic(b":pw")), None),
            (Some(basic(b"alice")), None),
            (Some(basic(b"al\0ice:pw")), None),
            (Some(basic(b"alice:p\nw")), None),
            (Some(basic(b" alice:pw")), None),
            (Some(basic(b"\xff\xfe:pw")), None),
            (Some("Basic !!!".into()), None),
            (Some("Bearer abc".into()), None),
            (Some("Basic".into()), None),
        ];
        for (header, expected) in cases {
            let got = basic_credentials(&input_with(header.as_deref()));
            let got = got.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
            assert_eq!(got, *expected, "{header:?}");
        }
    }

    fn mk_config(extra: Value) -> Value {
        let mut config = serde_json::json!({
            "address": "127.0.0.1:389",
            "userDnTemplate": "uid=%s,ou=people,dc=example,dc=org",
            "allowedGroups": ["cn=Developers, ou=groups,dc=example,dc=org"],
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    }

    #[test]
    fn from_config_defaults_like_gloo_and_escapes_user_names_into_the_dn() {
        let ldap = Ldap::from_config(&mk_config(serde_json::json!({}))).unwrap();
        assert_eq!(ldap.url, "ldap://127.0.0.1:389");
        assert_eq!(ldap.membership_attribute, "memberOf");
        assert_eq!(ldap.search_filter, "(uid=*)");
        assert_eq!(ldap.rdn_attribute.as_deref(), Some("uid"));
        assert_eq!(ldap.allowed_groups, ["cn=developers,ou=groups,dc=example,dc=org"]);
        assert_eq!(ldap.user_dn("alice"), "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(
            ldap.user_dn("x,ou=admins"),
            "uid=x\\2cou\\3dadmins,ou=people,dc=example,dc=org"
        );
        assert_eq!(ldap.user_dn("*"), "uid=*,ou=people,dc=example,dc=org");
    }

    #[test]
    fn from_config_refuses_configs_that_cannot_work() {
        let cases = [
            (
                serde_json::json!({"userDnTemplate": "uid=alice,dc=org"}),
                "exactly once",
            ),
            (serde_json::json!({"userDnTemplate": "uid=%s,cn=%s"}), "exactly once"),
            (serde_json::json!({"allowedGroups": []}), "disableGroupChecking"),
            (serde_json::json!({"address": "http://x:389"}), "ldap.address"),
            (serde_json::json!({"address": "ldap://"}), "ldap.address"),
            (serde_json::json!({"searchFilter": "uid=*"}), "ldap.searchFilter"),
            (serde_json::json!({"groupLookupSettings": {}}), "not supported"),
            (serde_json::json!({"userDNTemplate": "x"}), "unknown field"),
        ];
        for (extra, message) in cases {
            let error = format!("{:#}", Ldap::from_config(&mk_config(extra.clone())).unwrap_err());
            assert!(error.contains(message), "{extra}: {error}");
        }
        assert!(
            Ldap::from_config(&mk_config(
                serde_json::json!({"allowedGroups": [], "disableGroupChecking": true})
            ))
            .is_ok()
        );
    }
}
