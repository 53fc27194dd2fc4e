//! Add-on policies: ExtAuthPolicy and RateLimitPolicy on routes, the servers they call per
//! cluster (ExtAuthServer, RateLimitServerSettings resolved against the add-ons each agent
//! reports), and what the add-ons themselves load (auth configs with their Secrets and
//! ConfigMaps resolved, rate-limit domains from RateLimitServerConfigs).
//!
//! Conflicts: one ExtAuthPolicy and one RateLimitPolicy per route; the oldest wins.
//!
//! Where they are enforced. A check only on the caller's side (its sidecar's outbound listener or
//! the ingress gateway) is skipped by anyone who calls the destination's sidecar directly, so the
//! routes to mesh destinations are also mirrored on the destination sidecars' inbound listeners
//! (`inbound_routes`):
//! - ext-auth runs on both sides. The caller's check keeps unauthenticated requests from
//!   crossing the network and keeps browser logins (OIDC) where they were; the destination's
//!   is the one a direct caller cannot skip, with mTLS or in plaintext. Checking a credential
//!   twice costs one more local gRPC call, never a wrong answer.
//! - a rate limit is counted once per request. Requests through a caller's sidecar or an ingress
//!   gateway are counted there, as before, so a budget stays one budget per caller cluster even
//!   when the destination's workloads span clusters (counting at the destination would give one
//!   budget per destination cluster: N clusters, N times the limit). Those requests reach the
//!   destination over mTLS, which only mesh proxies hold keys for; a request that arrives in
//!   plaintext (PERMISSIVE or DISABLE) never went through one, so the destination counts exactly
//!   those. A route keyed on `sourceCluster` or `destinationCluster` is not counted at the
//!   destination, where those would name the destination's own cluster; its status says so.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use trellis_api::{
    DestinationSelector, DestinationServer, ExtAuthPolicySpec, Kind, ObjectReference, RateLimitAction as ApiAction,
    RateLimitDescriptor, RateLimitPolicySpec, RateLimitServerConfigSpec, RateLimitUnit, RawClientConfig, Resource,
    RouteSelector, Spec,
};
use trellis_base::{duration_ms, sha256_hex};
use trellis_model::Snapshot;
use trellis_model::addons::{
    AddonConfig, AddonEndpoint, AddonKind, AddonServer, AuthConfigEntry, DescriptorActions, RateLimitAction,
    RouteExtAuth, RouteRateLimit,
};
use trellis_model::ir::ValueMatch;
use trellis_ratelimit::{Descriptor, LimitSpec, RateLimitDomain, SET_DESCRIPTOR_KEY, SetDescriptor, Unit};

use crate::Warnings;
use crate::destination_policies::DestinationLookup;
use crate::outbound::{Outbound, PendingAction, PendingRoute};
use crate::report::Report;
use crate::route_policies::RouteScope;

/// Default services of the add-ons (Gloo's defaults).
const DEFAULT_EXT_AUTH: (&str, &str) = ("ext-auth-service", "gloo-mesh");
const DEFAULT_RATE_LIMITER: (&str, &str) = ("rate-limiter", "gloo-mesh");
const DEFAULT_EXT_AUTH_TIMEOUT_MS: u64 = 2000;
const DEFAULT_RATE_LIMIT_TIMEOUT_MS: u64 = 100;

/// A server some policy uses, before it is resolved per cluster.
struct ServerUse {
    name: String,
    /// `Kind/namespace/name` of the ExtAuthServer or RateLimitServerSettings.
    resource: String,
    kind: AddonKind,
    /// (namespace, name) of the add-on service; `None` for a server that does not exist.
    service: Option<(String, String)>,
    port: Option<u32>,
    timeout_ms: u64,
    fail_open: bool,
    status_on_error: Option<u32>,
    request_body: Option<trellis_model::addons::RequestBody>,
}

/// What translation of the add-on policies yields for every cluster alike.
#[derive(Default)]
pub(crate) struct Addons {
    servers: Vec<ServerUse>,
    config: AddonConfig,
}

fn reference_key(kind: Kind, reference: &ObjectReference, owner: &Resource) -> String {
    let namespace = if reference.namespace.is_empty() {
        &owner.metadata.namespace
    } else {
        &reference.namespace
    };
    format!("{kind}/{namespace}/{}", reference.name)
}

fn find<'s>(snapshot: &'s Snapshot, key: &str) -> Option<&'s Resource> {
    snapshot.resources.iter().find(|r| r.key().to_string() == key)
}

fn service_of(server: &Option<DestinationServer>, default: (&str, &str), owner: &Resource) -> (String, String) {
    match server {
        Some(server) => (
            if server.reference.namespace.is_empty() {
                owner.metadata.namespace.clone()
            } else {
                server.reference.namespace.clone()
            },
            server.reference.name.clone(),
        ),
        None => (default.1.to_string(), default.0.to_string()),
    }
}

/// The selectors of every add-on policy: the incremental path leaves a route any of them
/// selects to full translation.
/// Each with the namespace of its policy.
#[allow(clippy::type_complexity)]
pub(crate) fn route_selectors(snapshot: &Snapshot) -> Vec<(&str, (&[RouteSelector], &[DestinationSelector]))> {
    snapshot
        .resources
        .iter()
        .filter_map(|r| {
            let selectors = match &r.spec {
                Spec::ExtAuthPolicy(spec) => (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]),
                Spec::RateLimitPolicy(spec) => (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]),
                _ => return None,
            };
            Some((r.metadata.namespace.as_str(), selectors))
        })
        .collect()
}

/// True when a policy selects the route: by route labels, or by a destination it forwards to.
pub(crate) fn selects(
    (routes, destinations): (&[RouteSelector], &[DestinationSelector]),
    route: &PendingRoute,
    targets: &[crate::Target],
    lookup: &DestinationLookup<'_>,
    policy_namespace: &str,
) -> bool {
    if destinations.is_empty() {
        return crate::route_policies::selects(routes, route);
    }
    let by_destination = match &route.action {
        PendingAction::Forward { destinations: d, .. } => d.iter().any(|(target, _)| {
            crate::destination_policies::selects(destinations, &targets[*target], lookup, policy_namespace)
        }),
        PendingAction::Fixed(_) => false,
    };
    by_destination || (!routes.is_empty() && crate::route_policies::selects(routes, route))
}

/// Bytes of body an ext-auth check buffers when `requestBody` gives no `maxRequestBytes`.
const DEFAULT_EXT_AUTH_BODY_BYTES: u32 = 4096;

/// Where a policy is enforced on a route, for its status.
pub(crate) const EXT_AUTH_BOTH_SIDES: &str =
    "checked on the caller's sidecar or ingress gateway and again on the destination's sidecar inbound";
pub(crate) const EXT_AUTH_CALLER_ONLY: &str =
    "checked on the caller's sidecar or ingress gateway only (routes to external services or fixed responses)";
pub(crate) const RATE_LIMIT_BOTH_SIDES: &str = "counted once: on the caller's sidecar or ingress gateway, \
     or on the destination's sidecar inbound for plaintext callers, which no mesh proxy is";
pub(crate) const RATE_LIMIT_AT_CALLER: &str = "counted on the caller's sidecar or ingress gateway only, \
     so a plaintext caller of the destination's sidecar is not counted (the route goes to an external \
     service or keys on sourceCluster or destinationCluster)";

/// Runs `apply` on every selected route; `apply` returns where the policy is enforced there, or
/// `None` when an older policy holds the route.
fn for_each_route(
    outbound: &mut Outbound,
    selectors: (&[RouteSelector], &[DestinationSelector]),
    lookup: &DestinationLookup<'_>,
    resource: &Resource,
    report: &mut Report,
    mut apply: impl FnMut(&mut PendingRoute, &[crate::Target]) -> Option<&'static str>,
) {
    let entry = report.entry(&resource.key().to_string());
    let in_scope = RouteScope::of(lookup.snapshot, lookup.workspaces, resource);
    let namespace = &resource.metadata.namespace;
    let targets = &outbound.targets;
    let ingress = outbound.ingress.iter_mut().map(|(_, host)| host);
    for host in outbound.virtual_hosts.iter_mut().chain(ingress) {
        for route in &mut host.routes {
            // A route-label selection reaches only the routes available in the policy's
            // workspace; a destination selection is scoped by the destination's workspace.
            let by_route = selectors.1.is_empty() && !in_scope.reaches(route);
            if by_route || !selects(selectors, route, targets, lookup, namespace) {
                continue;
            }
            match apply(route, targets) {
                Some(enforced) => {
                    entry.applied += 1;
                    entry.enforced.insert(enforced);
                }
                None => entry.lost.push(format!("route {} of {}", route.name, host.name)),
            }
        }
    }
}

/// True when the route forwards only to mesh services with workloads, whose sidecars can
/// enforce a policy; an external service (a fixed forward) or a direct response has none.
fn reaches_mesh_workloads(route: &PendingRoute, targets: &[crate::Target]) -> bool {
    match &route.action {
        PendingAction::Forward { destinations, .. } => {
            !destinations.is_empty() && destinations.iter().all(|(t, _)| !targets[*t].backends.is_empty())
        }
        PendingAction::Fixed(_) => false,
    }
}

/// Puts the ext-auth `binding` on every selected route that has none yet (the oldest policy
/// wins; this one loses where the route is taken).
fn claim_ext_auth(
    outbound: &mut Outbound,
    selectors: (&[RouteSelector], &[DestinationSelector]),
    lookup: &DestinationLookup<'_>,
    resource: &Resource,
    report: &mut Report,
    binding: RouteExtAuth,
) {
    for_each_route(outbound, selectors, lookup, resource, report, |route, targets| {
        if route.policies.ext_auth.is_some() {
            return None;
        }
        route.policies.ext_auth = Some(binding.clone());
        Some(if reaches_mesh_workloads(route, targets) {
            EXT_AUTH_BOTH_SIDES
        } else {
            EXT_AUTH_CALLER_ONLY
        })
    });
}

/// Puts the rate-limit `binding` on every selected route that has none yet: counted where the
/// request leaves, and for plaintext callers at the destination when it means the same there.
fn claim_rate_limit(
    outbound: &mut Outbound,
    selectors: (&[RouteSelector], &[DestinationSelector]),
    lookup: &DestinationLookup<'_>,
    resource: &Resource,
    report: &mut Report,
    binding: RouteRateLimit,
) {
    // A plaintext caller's address is the caller itself, so remoteAddress keeps its meaning at
    // the destination; the cluster actions do not.
    let portable = binding
        .descriptors
        .iter()
        .flat_map(|d| &d.actions)
        .all(|a| !matches!(a, RateLimitAction::SourceCluster | RateLimitAction::DestinationCluster));
    for_each_route(outbound, selectors, lookup, resource, report, |route, targets| {
        if route.policies.rate_limit.is_some() {
            return None;
        }
        route.policies.rate_limit = Some(binding.clone());
        if portable && reaches_mesh_workloads(route, targets) {
            route.destination_rate_limit = Some(binding.clone());
            Some(RATE_LIMIT_BOTH_SIDES)
        } else {
            Some(RATE_LIMIT_AT_CALLER)
        }
    });
}

pub(crate) fn apply(
    lookup: &DestinationLookup<'_>,
    outbound: &mut Outbound,
    report: &mut Report,
    warnings: &mut Warnings,
) -> Addons {
    let snapshot = lookup.snapshot;
    let mut addons = Addons::default();
    for resource in &snapshot.resources {
        match &resource.spec {
            Spec::ExtAuthPolicy(spec) => {
                ext_auth_policy(lookup, resource, spec, outbound, report, warnings, &mut addons)
            }
            Spec::RateLimitPolicy(spec) => {
                rate_limit_policy(lookup, resource, spec, outbound, report, warnings, &mut addons)
            }
            Spec::RateLimitServerConfig(spec) => addons.config.rate_limit_domains.push(domain(resource, spec)),
            _ => {}
        }
    }
    addons.servers.sort_by(|a, b| a.name.cmp(&b.name));
    addons.servers.dedup_by(|a, b| a.name == b.name);
    addons.config.auth_configs.sort_by(|a, b| a.id.cmp(&b.id));
    addons.config.rate_limit_domains.sort_by(|a, b| a.domain.cmp(&b.domain));
    addons
}

impl Addons {
    /// Records that a policy uses a server (an ExtAuthServer or RateLimitServerSettings);
    /// returns the server's name, which names its Envoy filter and cluster.
    fn use_server(
        &mut self,
        kind: AddonKind,
        resource: &Resource,
        destination: &Option<DestinationServer>,
        timeout: &Option<String>,
        fail_open: bool,
        status_on_error: Option<u32>,
    ) -> String {
        let (prefix, default_service, default_timeout) = match kind {
            AddonKind::ExtAuth => ("ext-auth", DEFAULT_EXT_AUTH, DEFAULT_EXT_AUTH_TIMEOUT_MS),
            AddonKind::RateLimit => ("rate-limit", DEFAULT_RATE_LIMITER, DEFAULT_RATE_LIMIT_TIMEOUT_MS),
        };
        let name = format!("{prefix}|{}/{}", resource.metadata.namespace, resource.metadata.name);
        self.servers.push(ServerUse {
            name: name.clone(),
            resource: resource.key().to_string(),
            kind,
            service: Some(service_of(destination, default_service, resource)),
            port: destination
                .as_ref()
                .and_then(|s| s.port.as_ref())
                .and_then(|p| p.number),
            timeout_ms: timeout.as_deref().and_then(duration_ms).unwrap_or(default_timeout),
            fail_open,
            status_on_error,
            request_body: None,
        });
        name
    }

    /// The servers as one cluster's proxies call them: endpoints from that cluster's add-ons.
    pub(crate) fn for_cluster(
        &self,
        snapshot: &Snapshot,
        cluster: &str,
        warnings: &mut Warnings,
    ) -> (Vec<AddonServer>, AddonConfig) {
        let registered = snapshot
            .discovery
            .get(cluster)
            .map(|d| d.addons.as_slice())
            .unwrap_or(&[]);
        let servers = self
            .servers
            .iter()
            .map(|server| {
                let Some((namespace, name)) = &server.service else {
                    // A server that does not exist: no endpoint, the policy's warning says why.
                    return AddonServer {
                        name: server.name.clone(),
                        kind: server.kind,
                        endpoint: None,
                        timeout_ms: server.timeout_ms,
                        fail_open: server.fail_open,
                        status_on_error: server.status_on_error,
                    request_body: server.request_body.clone(),
                    };
                };
                // The add-on registered under the service name is the server. Its listen port is
                // its own: a `port` in the reference (by number, often the Kubernetes service
                // port, or by name such as `grpc`) picks among instances of one name and never
                // makes a registered server "missing". Its identity is checked by mTLS anyway.
                let named = |a: &&trellis_model::discovery::AddonInstance| (&a.namespace, &a.name) == (namespace, name);
                let endpoint = registered
                    .iter()
                    .filter(named)
                    .find(|a| server.port == Some(u32::from(a.port)))
                    .or_else(|| registered.iter().find(named))
                    .map(|a| AddonEndpoint {
                        address: a.address.clone(),
                        port: a.port,
                        // Add-ons serve mTLS with a certificate their agent issues for the
                        // service they registered as: the proxies check exactly that identity.
                        identity: trellis_model::spiffe_id(&snapshot.trust_domain, &a.namespace, &a.name),
                    });
                if endpoint.is_none() {
                    let failure = if server.fail_open { "let through" } else { "refused" };
                    warnings.add(
                        &server.resource,
                        format!(
                            "no add-on {namespace}/{name} is registered in cluster {cluster}: its requests on these routes are {failure}"
                        ),
                    );
                }
                AddonServer {
                    name: server.name.clone(),
                    kind: server.kind,
                    endpoint,
                    timeout_ms: server.timeout_ms,
                    fail_open: server.fail_open,
                    status_on_error: server.status_on_error,
                    request_body: server.request_body.clone(),
                }
            })
            .collect();
        (servers, self.config.clone())
    }
}

#[allow(clippy::too_many_arguments)]
fn ext_auth_policy(
    lookup: &DestinationLookup<'_>,
    resource: &Resource,
    spec: &ExtAuthPolicySpec,
    outbound: &mut Outbound,
    report: &mut Report,
    warnings: &mut Warnings,
    addons: &mut Addons,
) {
    let snapshot = lookup.snapshot;
    let key = resource.key().to_string();
    let server_key = reference_key(Kind::ExtAuthServer, &spec.config.server, resource);
    let found = match find(snapshot, &server_key) {
        Some(
            resource @ Resource {
                spec: Spec::ExtAuthServer(server),
                ..
            },
        ) => Some((resource, server)),
        _ => None,
    };
    let Some((server_resource, server)) = found else {
        // Fail closed: the selected routes still get ext-auth, with a server that has no
        // endpoint, so they are refused (403) until the ExtAuthServer exists, rather than
        // served without auth.
        warnings.add(
            &key,
            format!("spec.config.server: {server_key} does not exist; its routes are refused until it does"),
        );
        let name = format!("ext-auth|missing/{server_key}");
        addons.servers.push(ServerUse {
            name: name.clone(),
            resource: key.clone(),
            kind: AddonKind::ExtAuth,
            service: None,
            port: None,
            timeout_ms: DEFAULT_EXT_AUTH_TIMEOUT_MS,
            fail_open: false,
            status_on_error: None,
            request_body: None,
        });
        let binding = RouteExtAuth {
            server: name,
            context_extensions: BTreeMap::new(),
        };
        let selectors = (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]);
        claim_ext_auth(outbound, selectors, lookup, resource, report, binding);
        return;
    };
    let name = addons.use_server(
        AddonKind::ExtAuth,
        server_resource,
        &server.destination_server,
        &server.request_timeout,
        server.failure_mode_allow,
        server.status_on_error,
    );
    if let Some(used) = addons.servers.last_mut() {
        // Gloo's ExtAuthServer `requestBody`: the checks carry the body.
        used.request_body = server
            .request_body
            .as_ref()
            .map(|body| trellis_model::addons::RequestBody {
                max_bytes: body.max_request_bytes.unwrap_or(DEFAULT_EXT_AUTH_BODY_BYTES),
                allow_partial: body.allow_partial_message,
                as_bytes: body.pack_as_bytes,
            });
    }
    let config_id = format!("{}.{}", resource.metadata.namespace, resource.metadata.name);
    let mut context_extensions = BTreeMap::new();
    if let Some(auth) = &spec.config.gloo_auth {
        let resolved = resolve_auth_config(snapshot, resource, auth, &key, warnings);
        addons.config.auth_configs.push(AuthConfigEntry {
            id: config_id.clone(),
            spec: resolved,
        });
        context_extensions.insert("config_id".to_string(), config_id);
    }
    if let Some(custom) = &spec.config.custom_auth {
        context_extensions.extend(custom.context_extensions.clone());
    }
    let binding = RouteExtAuth {
        server: name,
        context_extensions,
    };
    let selectors = (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]);
    claim_ext_auth(outbound, selectors, lookup, resource, report, binding);
}

/// Every ExtAuthPolicy's auth config with its references resolved, as the ext-auth add-ons would
/// load it; the management server compiles these at apply time to refuse bad ones.
pub fn auth_configs(snapshot: &Snapshot) -> Vec<AuthConfigEntry> {
    let mut warnings = Warnings::default();
    snapshot
        .resources
        .iter()
        .filter_map(|resource| match &resource.spec {
            Spec::ExtAuthPolicy(spec) => spec.config.gloo_auth.as_ref().map(|auth| AuthConfigEntry {
                id: format!("{}.{}", resource.metadata.namespace, resource.metadata.name),
                spec: resolve_auth_config(snapshot, resource, auth, &resource.key().to_string(), &mut warnings),
            }),
            _ => None,
        })
        .collect()
}

/// Gloo's AuthConfigSpec with what it references filled in, so the ext-auth add-on needs no
/// access to Secrets or ConfigMaps. Missing references are warnings; the add-on then denies.
fn resolve_auth_config(
    snapshot: &Snapshot,
    policy: &Resource,
    auth: &Value,
    key: &str,
    warnings: &mut Warnings,
) -> Value {
    let mut auth = auth.clone();
    let namespace = policy.metadata.namespace.clone();
    let Some(configs) = auth.get_mut("configs").and_then(Value::as_array_mut) else {
        return auth;
    };
    for (index, config) in configs.iter_mut().enumerate() {
        let field = format!("spec.config.glooAuth.configs[{index}]");
        if let Some(api_key) = config.get_mut("apiKeyAuth") {
            let keys = api_keys(snapshot, &namespace, api_key, &field, key, warnings);
            api_key["keys"] = Value::Array(keys);
        }
        if let Some(opa) = config.get_mut("opaAuth") {
            let mut modules = serde_json::Map::new();
            for reference in opa
                .get("modules")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
                let ns = reference.get("namespace").and_then(Value::as_str).unwrap_or(&namespace);
                match find(snapshot, &format!("ConfigMap/{ns}/{name}")) {
                    Some(Resource {
                        spec: Spec::ConfigMap(map),
                        ..
                    }) => {
                        for (file, text) in &map.data {
                            modules.insert(format!("{ns}/{name}/{file}"), Value::String(text.clone()));
                        }
                    }
                    _ => warnings.add(
                        key,
                        format!("{field}.opaAuth.modules: ConfigMap/{ns}/{name} does not exist"),
                    ),
                }
            }
            opa["regoModules"] = Value::Object(modules);
        }
        if let Some(oidc) = config.pointer_mut("/oauth2/oidcAuthorizationCode")
            && let Some(reference) = oidc.get("clientSecretRef").cloned()
        {
            let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = reference.get("namespace").and_then(Value::as_str).unwrap_or(&namespace);
            if ns != namespace {
                warnings.add(
                    key,
                    format!("{field}.oauth2.oidcAuthorizationCode.clientSecretRef: {SECRETS_STAY_HOME}"),
                );
                continue;
            }
            match secret(snapshot, ns, name).and_then(|s| s.value("client-secret")) {
                Some(value) => oidc["clientSecret"] = Value::String(value),
                None => warnings.add(
                    key,
                    format!(
                        "{field}.oauth2.oidcAuthorizationCode.clientSecretRef: Secret/{ns}/{name} with key client-secret does not exist"
                    ),
                ),
            }
        }
    }
    auth
}

/// Policies read Secrets of their own namespace only: whoever may write policies in one namespace
/// must not be able to send another namespace's secrets to a server of their choosing.
const SECRETS_STAY_HOME: &str = "a policy reads Secrets of its own namespace only; this one is ignored";

fn secret<'s>(snapshot: &'s Snapshot, namespace: &str, name: &str) -> Option<&'s trellis_api::SecretSpec> {
    match find(snapshot, &format!("Secret/{namespace}/{name}")) {
        Some(Resource {
            spec: Spec::Secret(secret),
            ..
        }) => Some(secret),
        _ => None,
    }
}

/// The API keys an `apiKeyAuth` selects, as SHA-256 digests with the secret's other entries as
/// metadata. Label selectors look in the policy's namespace only, so that nobody can add a key
/// to another team's API by creating a Secret elsewhere.
fn api_keys(
    snapshot: &Snapshot,
    namespace: &str,
    config: &Value,
    field: &str,
    key: &str,
    warnings: &mut Warnings,
) -> Vec<Value> {
    let storage = config.get("k8sSecretApikeyStorage").unwrap_or(config);
    let mut selected: Vec<&Resource> = Vec::new();
    if let Some(labels) = storage.get("labelSelector").and_then(Value::as_object) {
        selected.extend(snapshot.resources.iter().filter(|r| {
            r.kind() == Kind::Secret
                && r.metadata.namespace == namespace
                && labels.iter().all(|(k, v)| {
                    v.as_str()
                        .is_some_and(|v| r.metadata.labels.get(k).map(String::as_str) == Some(v))
                })
        }));
    }
    for reference in storage
        .get("apiKeySecretRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let ns = reference.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
        if ns != namespace {
            warnings.add(key, format!("{field}.apiKeyAuth.apiKeySecretRefs: {SECRETS_STAY_HOME}"));
            continue;
        }
        match find(snapshot, &format!("Secret/{ns}/{name}")) {
            Some(resource) if resource.kind() == Kind::Secret => selected.push(resource),
            _ => warnings.add(
                key,
                format!("{field}.apiKeyAuth.apiKeySecretRefs: Secret/{ns}/{name} does not exist"),
            ),
        }
    }
    selected.sort_by_key(|r| r.key());
    selected.dedup_by_key(|r| r.key());
    let mut keys = Vec::new();
    for resource in selected {
        let Spec::Secret(secret) = &resource.spec else { continue };
        let mut values = secret.values();
        let Some(api_key) = values.remove("api-key") else {
            warnings.add(
                key,
                format!(
                    "{field}.apiKeyAuth: Secret/{}/{} has no api-key entry",
                    resource.metadata.namespace, resource.metadata.name
                ),
            );
            continue;
        };
        keys.push(json!({
            "sha256": sha256_hex(api_key.as_bytes()),
            "secret": format!("{}/{}", resource.metadata.namespace, resource.metadata.name),
            "metadata": values,
        }));
    }
    if keys.is_empty() {
        warnings.add(
            key,
            format!("{field}.apiKeyAuth selects no API key yet: every request will be refused"),
        );
    }
    keys
}

#[allow(clippy::too_many_arguments)]
fn rate_limit_policy(
    lookup: &DestinationLookup<'_>,
    resource: &Resource,
    spec: &RateLimitPolicySpec,
    outbound: &mut Outbound,
    report: &mut Report,
    warnings: &mut Warnings,
    addons: &mut Addons,
) {
    let snapshot = lookup.snapshot;
    let key = resource.key().to_string();
    let settings_key = reference_key(Kind::RateLimitServerSettings, &spec.config.server_settings, resource);
    let config_key = reference_key(
        Kind::RateLimitServerConfig,
        &spec.config.ratelimit_server_config,
        resource,
    );
    let Some(settings_resource) = find(snapshot, &settings_key) else {
        warnings.add(
            &key,
            format!("spec.config.serverSettings: {settings_key} does not exist; the policy applies nowhere"),
        );
        return;
    };
    let Spec::RateLimitServerSettings(settings) = &settings_resource.spec else {
        return;
    };
    let Some(config_resource) = find(snapshot, &config_key) else {
        warnings.add(
            &key,
            format!("spec.config.ratelimitServerConfig: {config_key} does not exist; the policy applies nowhere"),
        );
        return;
    };
    let client: RawClientConfig = match (&spec.config.raw, &spec.config.ratelimit_client_config) {
        (Some(raw), _) => raw.clone(),
        (None, Some(reference)) => {
            let client_key = reference_key(Kind::RateLimitClientConfig, reference, resource);
            match find(snapshot, &client_key) {
                Some(Resource {
                    spec: Spec::RateLimitClientConfig(client),
                    ..
                }) => client.raw.clone(),
                _ => {
                    warnings.add(
                        &key,
                        format!(
                            "spec.config.ratelimitClientConfig: {client_key} does not exist; the policy applies nowhere"
                        ),
                    );
                    return;
                }
            }
        }
        (None, None) => return,
    };
    for (i, limits) in client.rate_limits.iter().enumerate() {
        if limits.limit.is_some() {
            warnings.add(
                &key,
                format!(
                    "rateLimits[{i}].limit (a dynamic limit from metadata) is accepted but not applied: the server's configured limits count"
                ),
            );
        }
    }
    let name = addons.use_server(
        AddonKind::RateLimit,
        settings_resource,
        &settings.destination_server,
        &settings.request_timeout,
        !settings.deny_on_fail,
        None,
    );
    let binding = RouteRateLimit {
        server: name,
        domain: domain_name(config_resource),
        descriptors: client
            .rate_limits
            .iter()
            .map(|limits| {
                let mut actions: Vec<RateLimitAction> = Vec::new();
                if !limits.set_actions.is_empty() {
                    actions.push(RateLimitAction::GenericKey {
                        descriptor_key: SET_DESCRIPTOR_KEY.0.to_string(),
                        descriptor_value: SET_DESCRIPTOR_KEY.1.to_string(),
                    });
                    actions.extend(limits.set_actions.iter().filter_map(action));
                } else {
                    actions.extend(limits.actions.iter().filter_map(action));
                }
                DescriptorActions { actions }
            })
            .collect(),
    };
    let selectors = (&spec.apply_to_routes[..], &spec.apply_to_destinations[..]);
    claim_rate_limit(outbound, selectors, lookup, resource, report, binding);
}

fn action(action: &ApiAction) -> Option<RateLimitAction> {
    if action.source_cluster.is_some() {
        return Some(RateLimitAction::SourceCluster);
    }
    if action.destination_cluster.is_some() {
        return Some(RateLimitAction::DestinationCluster);
    }
    if action.remote_address.is_some() {
        return Some(RateLimitAction::RemoteAddress);
    }
    if let Some(headers) = &action.request_headers {
        return Some(RateLimitAction::RequestHeaders {
            header_name: headers.header_name.clone(),
            descriptor_key: headers.descriptor_key.clone(),
            skip_if_absent: headers.skip_if_absent,
        });
    }
    if let Some(generic) = &action.generic_key {
        return Some(RateLimitAction::GenericKey {
            descriptor_key: generic.descriptor_key.clone().unwrap_or_else(|| "generic_key".into()),
            descriptor_value: generic.descriptor_value.clone(),
        });
    }
    if let Some(metadata) = &action.metadata {
        return Some(RateLimitAction::Metadata {
            descriptor_key: metadata.descriptor_key.clone(),
            filter: metadata.metadata_key.key.clone(),
            path: metadata.metadata_key.path.iter().map(|s| s.key.clone()).collect(),
            default_value: metadata.default_value.clone(),
            route_entry: metadata.source.as_deref() == Some("ROUTE_ENTRY"),
            skip_if_absent: metadata.skip_if_absent,
        });
    }
    let matcher = action.header_value_match.as_ref()?;
    Some(RateLimitAction::HeaderValueMatch {
        descriptor_key: matcher.descriptor_key.clone().unwrap_or_else(|| "header_match".into()),
        descriptor_value: matcher.descriptor_value.clone(),
        expect_match: matcher.expect_match.unwrap_or(true),
        headers: matcher
            .headers
            .iter()
            .map(|h| {
                let (value, absent) = match (&h.exact_match, &h.regex_match) {
                    (Some(exact), _) => (ValueMatch::Exact(exact.clone()), false),
                    (None, Some(regex)) => (ValueMatch::Regex(regex.clone()), false),
                    // `presentMatch: false` asks for the header's absence.
                    (None, None) => (ValueMatch::Present, h.present_match == Some(false)),
                };
                (h.name.clone(), value, h.invert_match != absent)
            })
            .collect(),
    })
}

fn domain_name(resource: &Resource) -> String {
    format!("{}.{}", resource.metadata.namespace, resource.metadata.name)
}

fn unit(unit: RateLimitUnit) -> Unit {
    match unit {
        RateLimitUnit::Second => Unit::Second,
        RateLimitUnit::Minute => Unit::Minute,
        RateLimitUnit::Hour => Unit::Hour,
        RateLimitUnit::Day => Unit::Day,
    }
}

fn descriptor(d: &RateLimitDescriptor) -> Descriptor {
    Descriptor {
        key: d.key.clone(),
        value: d.value.clone(),
        limit: d.rate_limit.as_ref().map(|l| LimitSpec {
            unit: unit(l.unit),
            requests_per_unit: l.requests_per_unit,
            unlimited: false,
        }),
        descriptors: d.descriptors.iter().map(descriptor).collect(),
        weight: d.weight,
        always_apply: d.always_apply,
        shadow_mode: false,
        limit_name: None,
        replaces: Vec::new(),
    }
}

fn domain(resource: &Resource, spec: &RateLimitServerConfigSpec) -> RateLimitDomain {
    RateLimitDomain {
        domain: domain_name(resource),
        descriptors: spec.raw.descriptors.iter().map(descriptor).collect(),
        set_descriptors: spec
            .raw
            .set_descriptors
            .iter()
            .filter_map(|set| {
                let limit = set.rate_limit.as_ref()?;
                Some(SetDescriptor {
                    entries: set
                        .simple_descriptors
                        .iter()
                        .map(|s| (s.key.clone(), s.value.clone()))
                        .collect(),
                    limit: LimitSpec {
                        unit: unit(limit.unit),
                        requests_per_unit: limit.requests_per_unit,
                        unlimited: false,
                    },
                    always_apply: set.always_apply,
                })
            })
            .collect(),
    }
}
