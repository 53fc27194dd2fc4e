//! Trellis resource types, in the Gloo Mesh 2.x apiVersions, and their parsing and validation.
//!
//! ```text
//!  YAML / JSON text ──parse──▶ serde_json::Value per document ──typed──▶ Resource ──validate──▶ accepted
//!                         every failure names: source, document, kind/namespace/name, field path
//! ```
//!
//! Pure: no I/O. The management server, the CLI and tests all parse through [`parse_documents`].

mod addons;
mod admin_kinds;
mod common;
mod core;
mod envoy_limits;
mod error;
mod external;
mod gateway;
mod jwks;
mod kind;
mod meta;
mod networking;
mod parse;
mod policy;
mod rbac;
mod resilience_policies;
mod resource;
mod schema;
mod security_policies;
mod traffic_policies;
mod transformation;
mod validate;
mod validate_access_log;
mod validate_addons;
mod validate_gloo_policies;
mod validate_policy;
mod validate_transformation;
mod workspace;

pub use addons::*;
pub use admin_kinds::*;
pub use common::{DestinationKind, DestinationReference, ObjectReference, ObjectSelector, PortSelector};
pub use core::{ConfigMapSpec, SecretSpec, decode_base64};
pub use error::{ApiError, DocumentError};
pub use external::*;
pub use gateway::*;
pub use jwks::{is_pem, pem_to_jwks};
pub use kind::Kind;
pub use meta::ObjectMeta;
pub use networking::{
    AwsFilter, CloudProviderFilter, DelegateAction, DelegateSortMethod, DirectResponseAction, ForwardToAction,
    HeaderMatcher, HttpRoute, QueryParameterMatcher, RedirectAction, RequestMatcher, RouteFilter, RouteTableSpec,
    UriMatcher, VirtualDestinationPort, VirtualDestinationSpec,
};
pub use parse::{parse_documents, parse_one};
pub use policy::*;
pub use rbac::{PolicyRule, RoleBindingSpec, RoleRef, RoleSpec, Subject, VERBS};
pub use resilience_policies::*;
pub use resource::{Resource, ResourceKey, Spec};
pub use schema::spec_schema;
pub use security_policies::*;
pub use traffic_policies::*;
pub use transformation::*;
pub use validate_access_log::MAX_ACCESS_LOG_ENTRIES;
pub use validate_policy::regex_escape;

/// Where cluster-scoped objects (KubernetesClusters, ClusterRoles, ClusterRoleBindings) are kept.
pub const ADMIN_NAMESPACE: &str = "trellis";
pub use workspace::{
    ClusterSelector, Federation, KubernetesClusterSpec, NamespaceSelector, ServiceIsolation, SharedKind,
    TypedObjectSelector, WorkspaceObjectSelector, WorkspaceOptions, WorkspaceSelector, WorkspaceSettingsSpec,
    WorkspaceSpec,
};
