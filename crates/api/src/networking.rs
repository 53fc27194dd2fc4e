//! `networking.gloo.solo.io/v2`: VirtualDestination and RouteTable.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{DestinationReference, ObjectSelector, PortSelector};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualDestinationSpec {
    /// Host names clients use; no wildcards.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Selects the backing services, in any cluster.
    #[serde(default)]
    pub services: Vec<ObjectSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_services: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_workloads: Vec<Value>,
    #[serde(default)]
    pub ports: Vec<VirtualDestinationPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_mode: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualDestinationPort {
    pub number: u32,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS; HTTP when left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// The backing services' port, by number or name; the same number when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<PortSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableSpec {
    /// Host names the table serves; only a left-most `*.` wildcard is allowed.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_gateways: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workload_selectors: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apply_to_destinations: Vec<Value>,
    /// Where `forwardTo` routes of this table without destinations send traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_destination: Option<DestinationReference>,
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service_annotations: Option<Value>,
    /// Gloo Portal's API description of the table's routes (title, description, contact...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// ORed; an empty list matches every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<RequestMatcher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<ForwardToAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<DelegateAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponseAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<Value>,
}

/// All given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatcher {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<UriMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatcher>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

/// Exactly one of `exact`, `prefix` and `regex`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UriMatcher {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    /// When left out, the header only has to be there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert_match: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParameterMatcher {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub regex: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardToAction {
    #[serde(default)]
    pub destinations: Vec<DestinationReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_host_rewrite: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_redirect: Option<String>,
    /// MOVED_PERMANENTLY (default), FOUND, SEE_OTHER, TEMPORARY_REDIRECT or PERMANENT_REDIRECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponseAction {
    pub status: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// Hands the requests a route matches to the routes of other (child) RouteTables, which inherit
/// the route's matchers and labels. See
/// https://docs.solo.io/gloo-mesh-enterprise/latest/traffic_management/concepts/route-tables/route-delegation/
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelegateAction {
    /// Child tables, ORed; those one selector matches come oldest first.
    #[serde(default)]
    pub route_tables: Vec<ObjectSelector>,
    /// Restricts what child routes may do; none given: anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_routes: Vec<RouteFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_method: Option<DelegateSortMethod>,
}

/// How the routes gathered from child tables are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DelegateSortMethod {
    /// Tables by `weight` (higher first, ties in selection order); each table's routes in order.
    #[default]
    TableWeight,
    /// Every route by its most specific matcher: exact paths, then regexes, then prefixes,
    /// longer paths first; ties by table weight, then order.
    RouteSpecificity,
}

/// `common.gloo.solo.io.RouteFilter`: Gloo filters only routes to cloud providers (AWS Lambda).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFilter {
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "cloud_provider")]
    pub cloud_provider: Option<CloudProviderFilter>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudProviderFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsFilter>,
}

/// Each list, when given, must match what a Lambda route uses (regexes for roles and functions).
/// Proto field names are accepted too, as protobuf JSON does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "account_ids")]
    pub account_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "iam_roles")]
    pub iam_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// `lambda_function` is how the RouteTable reference's own example spells it.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        alias = "lambda_functions",
        alias = "lambda_function"
    )]
    pub lambda_functions: Vec<String>,
}

#[cfg(test)]
mod tests;
