//! The document the ext-auth service loads: Gloo `AuthConfigSpec`s (enterprise.gloo.solo.io/v1,
//! camelCase) keyed by the `config_id` Envoy sends per route, with the references the management
//! server resolved (Secrets, ConfigMaps) filled in.
//!
//! Fields Gloo has and this service does not need (`labelSelector`, `apiKeySecretRefs`, OPA
//! ConfigMap `modules`) are accepted and ignored, so a Gloo AuthConfig loads as it is; anything
//! else unknown is refused so a typo does not silently weaken auth.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The whole document: `{"configs": [{"id": ..., "spec": ...}]}`. The agent's answer adds a
/// `version`, accepted here so its body loads as it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfigDocument {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub configs: Vec<AuthConfigEntry>,
}

/// One auth config; `spec` stays raw until compiled so its errors can name the entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfigEntry {
    /// The `config_id` context extension that selects this config.
    pub id: String,
    pub spec: Value,
}

/// Gloo's `AuthConfigSpec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfigSpec {
    /// Kept raw so each entry's errors can name it (`configs[2] (opa1): ...`).
    #[serde(default)]
    pub configs: Vec<Value>,
    /// e.g. `basic1 || (jwt1 && opa1)`; without it every config must allow, in order.
    #[serde(default)]
    pub boolean_expr: Option<String>,
    /// Turn an OIDC redirect into a 401 (for API clients that cannot follow it).
    #[serde(default)]
    pub fail_on_redirect: bool,
}

/// One entry of `configs`: a name and exactly one auth type.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigEntry {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    #[serde(default)]
    pub api_key_auth: Option<ApiKeyAuthConfig>,
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    #[serde(default)]
    pub opa_auth: Option<OpaAuthConfig>,
    /// Handled by the server's LDAP module; kept raw.
    #[serde(default)]
    pub ldap: Option<Value>,
    #[serde(default)]
    pub pass_through_auth: Option<PassThroughAuthConfig>,
    // Gloo types this service does not implement: accepted by the parser only to be refused
    // with a message that names them, rather than "unknown field".
    #[serde(default)]
    pub oauth: Option<Value>,
    #[serde(default)]
    pub plugin_auth: Option<Value>,
    #[serde(default)]
    pub jwt: Option<Value>,
    #[serde(default)]
    pub hmac_auth: Option<Value>,
    #[serde(default)]
    pub opa_server_auth: Option<Value>,
    #[serde(default)]
    pub ldap_internal: Option<Value>,
}

// === basicAuth ===

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthConfig {
    #[serde(default)]
    pub realm: String,
    /// The legacy form: APR hashes and an inline user list.
    #[serde(default)]
    pub apr: Option<UserMap>,
    /// The extended form, with `userList`.
    #[serde(default)]
    pub encryption: Option<Encryption>,
    #[serde(default)]
    pub user_list: Option<UserMap>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserMap {
    #[serde(default)]
    pub users: BTreeMap<String, SaltedHashedPassword>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaltedHashedPassword {
    #[serde(default)]
    pub salt: String,
    #[serde(default)]
    pub hashed_password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    #[serde(default)]
    pub apr: Option<Empty>,
    #[serde(default)]
    pub sha1: Option<Empty>,
}

/// A protobuf message without fields (`{}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

// === apiKeyAuth ===

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuthConfig {
    /// The request header holding the key; `api-key` when empty.
    #[serde(default)]
    pub header_name: Option<String>,
    /// Upstream header name -> metadata entry of the matching key.
    #[serde(default)]
    pub headers_from_metadata_entry: BTreeMap<String, MetadataEntry>,
    /// Gloo's deprecated spelling of the same.
    #[serde(default)]
    pub headers_from_metadata: BTreeMap<String, MetadataEntry>,
    /// The keys, resolved by the management server from the Secrets Gloo's selectors name.
    #[serde(default)]
    pub keys: Vec<ResolvedApiKey>,
    // Gloo's ways of naming the Secrets; the management server has already resolved them.
    #[serde(default)]
    pub label_selector: Option<Value>,
    #[serde(default)]
    pub api_key_secret_refs: Option<Value>,
    #[serde(default)]
    pub k8s_secret_apikey_storage: Option<Value>,
    #[serde(default)]
    pub skip_metadata_validation: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataEntry {
    pub name: String,
    /// Deny when the key has no such entry.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolvedApiKey {
    /// Lowercase hex SHA-256 of the key: the service never holds the key itself.
    pub sha256: String,
    /// `namespace/name` of the Secret it came from, for logs.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

// === oauth2 ===

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuth2Config {
    #[serde(default)]
    pub access_token_validation: Option<AccessTokenValidation>,
    /// Handled by the server's OIDC module; kept raw.
    #[serde(default)]
    pub oidc_authorization_code: Option<Value>,
    /// Gloo's plain OAuth2 authorization code flow: not implemented.
    #[serde(default)]
    pub oauth2: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenValidation {
    #[serde(default)]
    pub jwt: Option<JwtValidationConfig>,
    #[serde(default)]
    pub claims_to_headers: Vec<ClaimToHeader>,
    #[serde(default)]
    pub required_scopes: Option<RequiredScopes>,
    // Token introspection: not implemented, refused by name.
    #[serde(default)]
    pub introspection_url: Option<Value>,
    #[serde(default)]
    pub introspection: Option<Value>,
    #[serde(default)]
    pub userinfo_url: Option<Value>,
    #[serde(default)]
    pub cache_timeout: Option<Value>,
    #[serde(default)]
    pub dynamic_metadata_from_claims: Option<Value>,
}

/// `["read"]`, or Gloo's `{scope: ["read"]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RequiredScopes {
    List(Vec<String>),
    Gloo { scope: Vec<String> },
}

impl RequiredScopes {
    pub fn scopes(&self) -> &[String] {
        match self {
            RequiredScopes::List(scopes) | RequiredScopes::Gloo { scope: scopes } => scopes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtValidationConfig {
    #[serde(default)]
    pub remote_jwks: Option<RemoteJwks>,
    #[serde(default)]
    pub local_jwks: Option<LocalJwks>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    pub url: String,
    /// Protobuf duration (`60s`); 5 minutes when absent.
    #[serde(default)]
    pub refresh_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalJwks {
    pub inline_string: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub claim: String,
    pub header: String,
    /// Gloo's flag; headers always overwrite here (Envoy would otherwise let a client preset them).
    #[serde(default)]
    pub append: Option<bool>,
}

// === opaAuth ===

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpaAuthConfig {
    pub query: String,
    /// Gloo's ConfigMap references; resolved into `regoModules` by the management server.
    #[serde(default)]
    pub modules: Vec<Value>,
    /// Source name (`ns/configmap/key`) -> Rego source.
    #[serde(default)]
    pub rego_modules: BTreeMap<String, String>,
    /// Gloo's evaluation options (`fastInputConversion`, ...): they do not change the decision.
    #[serde(default)]
    pub options: Option<Value>,
}

// === passThroughAuth ===

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassThroughAuthConfig {
    #[serde(default)]
    pub grpc: Option<PassThroughGrpcConfig>,
    /// Not implemented; refused by name.
    #[serde(default)]
    pub http: Option<Value>,
    /// Gloo passes this to the service; Envoy's ext_authz v3 API has no field for it.
    #[serde(default)]
    pub config: Option<Value>,
    /// Let the request through when the service cannot be reached (default: refuse it).
    #[serde(default)]
    pub failure_mode_allow: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassThroughGrpcConfig {
    /// `host:port` of another ext_authz v3 gRPC server.
    pub address: String,
    /// Protobuf duration; 5 seconds when absent.
    #[serde(default)]
    pub connection_timeout: Option<String>,
}
