//! Text to typed resources. YAML is read as a superset of JSON, so one parser serves both.

use serde_json::Value;

use crate::error::{ApiError, DocumentError};
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::{Resource, Spec};
use crate::validate::validate;

mod load;

/// The most text one parse accepts. Far above any real apply (the examples are a few KiB); it
/// bounds the memory and time a single request can make the parser spend.
pub const MAX_INPUT_BYTES: usize = 8 << 20;

/// Parses and validates every document of `text`. All-or-nothing: any error rejects the input,
/// and every error found is reported, not just the first.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Resource>, ApiError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ApiError::Invalid(vec![doc_error(
            source,
            1,
            None,
            None,
            format!(
                "the input is {} bytes: at most {MAX_INPUT_BYTES} bytes (8 MiB) in one apply; split it into several files",
                text.len()
            ),
        )]));
    }
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (index, loaded) in load::documents(text).into_iter().enumerate() {
        let number = index + 1;
        let (value, findings) = match loaded {
            Ok(loaded) => loaded,
            Err(message) => {
                errors.push(doc_error(source, number, None, None, message));
                break;
            }
        };
        for path in &findings.duplicates {
            let (resource, field) = locate(&value, path);
            let key = path.rsplit(['.', ']']).next().unwrap_or(path);
            errors.push(doc_error(
                source,
                number,
                resource,
                Some(field),
                format!("duplicate key `{key}`: give each key once (only the last value would be kept)"),
            ));
        }
        for value in expand_lists(value) {
            match typed(source, number, value) {
                Ok(resource) => match validate(&resource) {
                    Ok(()) => resources.push(resource),
                    Err(field_errors) => errors.extend(field_errors.into_iter().map(|(field, message)| {
                        doc_error(source, number, Some(resource.key().to_string()), Some(field), message)
                    })),
                },
                Err(refused) => errors.extend(refused),
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    if resources.is_empty() {
        return Err(ApiError::Empty(source.to_string()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, resource) in resources.iter().enumerate() {
        if !seen.insert(resource.key()) {
            errors.push(doc_error(
                source,
                index + 1,
                Some(resource.key().to_string()),
                None,
                "the same resource appears more than once in this input".into(),
            ));
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Parses exactly one resource (for API paths that name one).
pub fn parse_one(source: &str, text: &str) -> Result<Resource, ApiError> {
    let mut resources = parse_documents(source, text)?;
    if resources.len() != 1 {
        return Err(ApiError::Invalid(vec![doc_error(
            source,
            2,
            None,
            None,
            format!("expected one resource, found {}", resources.len()),
        )]));
    }
    Ok(resources.remove(0))
}

/// The resource a field path of a document belongs to, and the path within it: the document
/// itself, or the `items[i]` of a `kind: List`.
fn locate(document: &Value, path: &str) -> (Option<String>, String) {
    if document.get("kind").and_then(Value::as_str) == Some("List")
        && let Some(rest) = path.strip_prefix("items[")
        && let Some((index, field)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
        && let Some(item) = document.get("items").and_then(|items| items.get(index))
    {
        return (describe(item), field.trim_start_matches('.').to_string());
    }
    (describe(document), path.to_string())
}

/// `Kind/namespace/name` of an untyped document, as far as it says.
fn describe(document: &Value) -> Option<String> {
    let kind = document.get("kind")?.as_str()?;
    let metadata = document.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str)?;
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default");
    Some(format!("{kind}/{namespace}/{name}"))
}

/// Empty documents (`---` alone) are skipped; `kind: List` documents contribute their items.
fn expand_lists(value: Value) -> Vec<Value> {
    match value {
        Value::Null => Vec::new(),
        Value::Object(mut map) if map.get("kind").and_then(Value::as_str) == Some("List") => {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

fn doc_error(
    source: &str,
    document: usize,
    resource: Option<String>,
    field: Option<String>,
    message: String,
) -> DocumentError {
    DocumentError {
        source: source.to_string(),
        document,
        resource,
        field,
        message,
    }
}

/// Turns one document into a typed resource, naming the field of the first problem found.
pub(crate) fn typed(source: &str, document: usize, value: Value) -> Result<Resource, Vec<DocumentError>> {
    let one = |resource: Option<String>, field: &str, message: String| {
        doc_error(
            source,
            document,
            resource,
            Some(field.to_string()).filter(|f| !f.is_empty()),
            message,
        )
    };
    let err = |resource: Option<String>, field: &str, message: String| vec![one(resource, field, message)];
    let Value::Object(mut map) = value else {
        return Err(err(
            None,
            "",
            "a resource must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    };
    let kind_name = match map.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(err(None, "kind", "must be a string".into())),
        None => return Err(err(None, "kind", "is required".into())),
    };
    let kind = Kind::ALL.into_iter().find(|k| k.as_str() == kind_name).ok_or_else(|| {
        let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        if let Some(reason) = outside_the_mesh(api_version) {
            return err(
                None,
                "kind",
                format!("{kind_name} ({api_version}) is not served: {reason}"),
            );
        }
        let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        err(
            None,
            "kind",
            format!("unknown kind {kind_name:?} (known kinds: {})", known.join(", ")),
        )
    })?;

    let metadata_value = map.remove("metadata").unwrap_or(Value::Object(Default::default()));
    let mut metadata: ObjectMeta = serde_path_to_error::deserialize(metadata_value).map_err(|e| {
        err(
            None,
            &join_path("metadata", &e.path().to_string()),
            e.inner().to_string(),
        )
    })?;
    if kind.cluster_scoped() {
        metadata.namespace = crate::ADMIN_NAMESPACE.to_string();
    } else if metadata.namespace.is_empty() {
        metadata.namespace = "default".to_string();
    }
    let display = format!("{}/{}/{}", kind, metadata.namespace, metadata.name);
    let resource_name = Some(display.clone());

    match map.remove("apiVersion") {
        Some(Value::String(version)) if version == kind.api_version() => {}
        Some(Value::String(version)) => {
            return Err(err(
                resource_name,
                "apiVersion",
                format!("{version:?} does not serve kind {kind}; use {:?}", kind.api_version()),
            ));
        }
        Some(_) => return Err(err(resource_name, "apiVersion", "must be a string".into())),
        None => {
            return Err(err(
                resource_name,
                "apiVersion",
                format!("is required; use {:?}", kind.api_version()),
            ));
        }
    }

    let spec_value = if kind.content_at_top_level() {
        // Core and RBAC kinds keep their content at the top level; gather it as their spec.
        let fields: &[&str] = if matches!(kind, Kind::ConfigMap | Kind::Secret) {
            &crate::core::CONTENT_FIELDS
        } else {
            &crate::rbac::CONTENT_FIELDS
        };
        let mut content = serde_json::Map::new();
        for &field in fields {
            if let Some(value) = map.remove(field) {
                content.insert(field.to_string(), value);
            }
        }
        Value::Object(content)
    } else {
        match map.remove("spec") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(value) => value,
        }
    };
    // `status` is written by the server; accept it in input (kubectl round trips) and drop it.
    map.remove("status");
    if let Some(unknown) = map.keys().next() {
        return Err(err(
            resource_name,
            unknown,
            "unknown top-level field (expected apiVersion, kind, metadata, spec)".into(),
        ));
    }

    let prefix = if kind.content_at_top_level() { "" } else { "spec" };
    let spec = typed_spec(kind, spec_value).map_err(|errors| {
        errors
            .into_iter()
            .map(|(path, message)| one(resource_name.clone(), &join_path(prefix, &path), message))
            .collect::<Vec<_>>()
    })?;
    Ok(Resource { metadata, spec })
}

/// Takes out the field or list item at `path`; false when there is none to take.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key),
            (Segment::Seq { index }, Value::Array(list)) => list.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    match (last, at) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(list)) if *index < list.len() => {
            list.remove(*index);
            true
        }
        _ => false,
    }
}

/// At most this many problems are reported for one document's spec.
const MAX_SPEC_ERRORS: usize = 20;

fn typed_spec(kind: Kind, value: Value) -> Result<Spec, Vec<(String, String)>> {
    /// Every problem of the spec, not only the first: each field serde refuses is taken out
    /// and the rest read again, so a user fixes them all in one round instead of one per apply.
    fn de<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, Vec<(String, String)>> {
        let mut errors = Vec::new();
        while errors.len() < MAX_SPEC_ERRORS {
            match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(typed) if errors.is_empty() => return Ok(typed),
                Ok(_) => break,
                Err(e) => {
                    errors.push((e.path().to_string(), e.inner().to_string()));
                    // A field that cannot be taken out (the spec itself, a missing field)
                    // would fail the same way again.
                    if !remove_at(&mut value, e.path()) {
                        break;
                    }
                }
            }
        }
        Err(errors)
    }
    Ok(match kind {
        Kind::KubernetesCluster => Spec::KubernetesCluster(de(value)?),
        Kind::Workspace => Spec::Workspace(de(value)?),
        Kind::WorkspaceSettings => Spec::WorkspaceSettings(de(value)?),
        Kind::VirtualDestination => Spec::VirtualDestination(de(value)?),
        Kind::RouteTable => Spec::RouteTable(de(value)?),
        Kind::AccessPolicy => Spec::AccessPolicy(de(value)?),
        Kind::RetryTimeoutPolicy => Spec::RetryTimeoutPolicy(de(value)?),
        Kind::FaultInjectionPolicy => Spec::FaultInjectionPolicy(de(value)?),
        Kind::FailoverPolicy => Spec::FailoverPolicy(de(value)?),
        Kind::OutlierDetectionPolicy => Spec::OutlierDetectionPolicy(de(value)?),
        Kind::HeaderManipulationPolicy => Spec::HeaderManipulationPolicy(de(value)?),
        Kind::ExternalService => Spec::ExternalService(de(value)?),
        Kind::ExternalEndpoint => Spec::ExternalEndpoint(de(value)?),
        Kind::VirtualGateway => Spec::VirtualGateway(de(value)?),
        Kind::ConfigMap => Spec::ConfigMap(de(value)?),
        Kind::Secret => Spec::Secret(de(value)?),
        Kind::ExtAuthServer => Spec::ExtAuthServer(de(value)?),
        Kind::ExtAuthPolicy => Spec::ExtAuthPolicy(de(value)?),
        Kind::RateLimitServerConfig => Spec::RateLimitServerConfig(de(value)?),
        Kind::RateLimitServerSettings => Spec::RateLimitServerSettings(de(value)?),
        Kind::RateLimitClientConfig => Spec::RateLimitClientConfig(de(value)?),
        Kind::RateLimitPolicy => Spec::RateLimitPolicy(de(value)?),
        Kind::Role => Spec::Role(de(value)?),
        Kind::ClusterRole => Spec::ClusterRole(de(value)?),
        Kind::RoleBinding => Spec::RoleBinding(de(value)?),
        Kind::ClusterRoleBinding => Spec::ClusterRoleBinding(de(value)?),
        Kind::CorsPolicy => Spec::CorsPolicy(de(value)?),
        Kind::JwtPolicy => Spec::JwtPolicy(de(value)?),
        Kind::CsrfPolicy => Spec::CsrfPolicy(de(value)?),
        Kind::ClientTlsPolicy => Spec::ClientTlsPolicy(de(value)?),
        Kind::DlpPolicy => Spec::DlpPolicy(de(value)?),
        Kind::WafPolicy => Spec::WafPolicy(de(value)?),
        Kind::GraphQlAllowedQueryPolicy => Spec::GraphQlAllowedQueryPolicy(de(value)?),
        Kind::MirrorPolicy => Spec::MirrorPolicy(de(value)?),
        Kind::TransformationPolicy => Spec::TransformationPolicy(de(value)?),
        Kind::LoadBalancerPolicy => Spec::LoadBalancerPolicy(de(value)?),
        Kind::ProxyProtocolPolicy => Spec::ProxyProtocolPolicy(de(value)?),
        Kind::HttpBufferPolicy => Spec::HttpBufferPolicy(de(value)?),
        Kind::ConnectionPolicy => Spec::ConnectionPolicy(de(value)?),
        Kind::ActiveHealthCheckPolicy => Spec::ActiveHealthCheckPolicy(de(value)?),
        Kind::ListenerConnectionPolicy => Spec::ListenerConnectionPolicy(de(value)?),
        Kind::TrimProxyConfigPolicy => Spec::TrimProxyConfigPolicy(de(value)?),
        Kind::AdaptiveRequestConcurrencyPolicy => Spec::AdaptiveRequestConcurrencyPolicy(de(value)?),
        Kind::GraphQlPersistedQueryCachePolicy => Spec::GraphQlPersistedQueryCachePolicy(de(value)?),
        Kind::AccessLogPolicy => Spec::AccessLogPolicy(de(value)?),
        Kind::WasmDeploymentPolicy => Spec::WasmDeploymentPolicy(de(value)?),
        Kind::LuaPolicy => Spec::LuaPolicy(de(value)?),
        Kind::RootTrustPolicy => Spec::RootTrustPolicy(de(value)?),
        Kind::Dashboard => Spec::Dashboard(de(value)?),
        Kind::IstioLifecycleManager => Spec::IstioLifecycleManager(de(value)?),
        Kind::GatewayLifecycleManager => Spec::GatewayLifecycleManager(de(value)?),
        Kind::InsightsConfig => Spec::InsightsConfig(de(value)?),
        Kind::WaypointLifecycleManager => Spec::WaypointLifecycleManager(de(value)?),
    })
}

/// serde_path_to_error renders the root as `.`; field paths read better without it.
fn join_path(prefix: &str, path: &str) -> String {
    match path {
        "" | "." => prefix.to_string(),
        path if prefix.is_empty() => path.to_string(),
        path if path.starts_with('[') => format!("{prefix}{path}"),
        path => format!("{prefix}.{path}"),
    }
}

/// Gloo groups that belong to Gloo Gateway's products rather than to the mesh: their kinds are
/// refused with the reason, not as unknown (docs/gloo-compatibility.md, "Outside the mesh").
fn outside_the_mesh(api_version: &str) -> Option<&'static str> {
    let group = api_version.split('/').next().unwrap_or_default();
    match group {
        "apimanagement.gloo.solo.io" => Some(
            "Gloo's API management (developer portal, API docs, GraphQL) is a Gloo Gateway product, not part of the mesh",
        ),
        "infrastructure.gloo.solo.io" => Some(
            "cloud providers (AWS Lambda destinations) are a Gloo Gateway feature; Trellis routes only to services, virtual destinations and external services",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod limits_tests;

#[cfg(test)]
mod gloo_kinds_tests;
