//! AccessPolicies on a sidecar's inbound listeners: which of them apply to the workload, which
//! TLS mode the listeners take, and the RBAC filters that enforce (or only count) their rules.
//!
//! ```text
//!  ir.inbound_policies ──applying(workload)──▶ [&InboundPolicy] ──tls_mode()──────▶ STRICT | PERMISSIVE | DISABLE
//!                                                               ├─http_rbac_per_route()▶ per-virtual-host config of the
//!                                                               │                        rule-less envoy.filters.http.rbac (http_rbac_filter())
//!                                                               └─network_rbac()───▶ envoy.filters.network.rbac (before tcp_proxy)
//! ```
//!
//! Enforced policies become ALLOW `rules` (a request passes when any rule of any of them
//! matches); dry-run policies become ALLOW `shadow_rules`, which only count. Each rule is one
//! RBAC policy named `<policy namespace/name>/<rule index>`. Plaintext connections carry no
//! principal, so rules naming principals never match them.
//!
//! Stats (see [`RbacStats`]; checked against Envoy 1.40's admin `/stats`): on an inbound HTTP
//! port `http.inbound|<port>.rbac.{allowed,denied}` and
//! `http.inbound|<port>.rbac.trellis_dry_run_.shadow_{allowed,denied}` (Envoy joins the shadow
//! prefix with a `.`); on a TCP port the same without the leading `http.`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal, rbac::Action as RbacAction,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::{Message, Name};
use trellis_model::ir::{PathMatch, ValueMatch};
use trellis_model::policy::{AuthzRule, InboundPolicy, TlsMode};
use trellis_model::{Workload, WorkloadPort};

use crate::common::{http_filter, network_filter};
use crate::routes::{exact, header_value_matcher, regex_matcher};
use crate::sidecar::inbound_name;

/// The `shadow_rules_stat_prefix` of every inbound RBAC filter. Envoy joins it to the shadow
/// counters with a dot: `http.inbound|9080.rbac.trellis_dry_run_.shadow_denied`.
pub const RBAC_DRY_RUN_STAT_PREFIX: &str = "trellis_dry_run_";

const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";

/// The exact names of the counters the RBAC filter of one inbound port keeps, as Envoy's admin
/// `/stats` shows them (e.g. `http.inbound|9080.rbac.denied`,
/// `http.inbound|9080.rbac.trellis_dry_run_.shadow_denied`, `inbound|5432.rbac.allowed`). They
/// exist only on ports where some applying policy has rules. `allowed`/`denied` count enforced decisions; `shadow_*` count what the
/// dry-run policies would have decided (`shadow_denied`: requests they would have refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacStats {
    pub allowed: String,
    pub denied: String,
    pub shadow_allowed: String,
    pub shadow_denied: String,
}

impl RbacStats {
    /// The counters of `port`'s inbound listener: under the HTTP connection manager's prefix
    /// (`http.inbound|<port>.rbac.`) for HTTP ports, under the filter's own
    /// (`inbound|<port>.rbac.`) for TCP ones.
    pub fn for_port(port: &WorkloadPort) -> RbacStats {
        let name = inbound_name(port);
        let prefix = match port.protocol {
            trellis_model::Protocol::Tcp => format!("{name}.rbac."),
            _ => format!("http.{name}.rbac."),
        };
        RbacStats {
            allowed: format!("{prefix}allowed"),
            denied: format!("{prefix}denied"),
            shadow_allowed: format!("{prefix}{RBAC_DRY_RUN_STAT_PREFIX}.shadow_allowed"),
            shadow_denied: format!("{prefix}{RBAC_DRY_RUN_STAT_PREFIX}.shadow_denied"),
        }
    }
}

/// The policies that select `workload`, in the IR's (precedence) order: every field a policy
/// sets must match, and an empty field matches anything.
pub(crate) fn applying<'a>(policies: &'a [InboundPolicy], workload: &Workload) -> Vec<&'a InboundPolicy> {
    policies
        .iter()
        .filter(|p| p.namespace.is_empty() || p.namespace == workload.namespace)
        .filter(|p| p.service.is_empty() || p.service == workload.service)
        .filter(|p| p.labels.iter().all(|(k, v)| workload.labels.get(k) == Some(v)))
        .collect()
}

/// The first applying policy that sets a mode decides; with none, mTLS is required.
pub(crate) fn tls_mode(policies: &[&InboundPolicy]) -> TlsMode {
    policies.iter().find_map(|p| p.tls_mode).unwrap_or(TlsMode::Strict)
}

/// The RBAC filter of every inbound HTTP port: without rules itself (it lets everything
/// through), it enforces what the route configuration gives it per virtual host
/// ([`http_rbac_per_route`]). Its shadow stat prefix names the dry-run counters of those.
pub(crate) fn http_rbac_filter() -> HttpFilter {
    let config = HttpRbac {
        rules: None,
        shadow_rules: None,
        shadow_rules_stat_prefix: RBAC_DRY_RUN_STAT_PREFIX.to_string(),
    };
    http_filter(HTTP_RBAC_FILTER, pack_sorted::<HttpRbacProto>(&config))
}

/// The per-route RBAC config (filter name, config) enforcing the applying policies on an
/// inbound HTTP port, or `None` when no applying policy has rules.
pub(crate) fn http_rbac_per_route(policies: &[&InboundPolicy]) -> Option<(String, Any)> {
    let (rules, shadow_rules) = rule_sets(policies, http_policy)?;
    let config = HttpRbacPerRoute {
        rbac: Some(HttpRbac {
            rules,
            shadow_rules_stat_prefix: shadow_prefix(&shadow_rules),
            shadow_rules,
        }),
    };
    Some((
        HTTP_RBAC_FILTER.to_string(),
        pack_sorted::<HttpRbacPerRouteProto>(&config),
    ))
}

/// A per-route RBAC config (filter name, config) that lets through the requests `principal`
/// matches, as one ALLOW policy named `name`, and refuses the rest with 403.
pub(crate) fn http_rbac_allow(name: &str, principal: Principal) -> (String, Any) {
    let policy = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![principal],
        ..Default::default()
    };
    let config = HttpRbacPerRoute {
        rbac: Some(HttpRbac {
            rules: Some(RbacRules {
                action: RbacAction::Allow as i32,
                policies: BTreeMap::from([(name.to_string(), policy)]),
            }),
            shadow_rules: None,
            shadow_rules_stat_prefix: String::new(),
        }),
    };
    (
        HTTP_RBAC_FILTER.to_string(),
        pack_sorted::<HttpRbacPerRouteProto>(&config),
    )
}

/// Matched when any of `ids` is; `None` for none.
pub(crate) fn any_principal(ids: Vec<Principal>) -> Option<Principal> {
    any_id(ids)
}

/// Matched when every one of `ids` is (so always, for none).
pub(crate) fn all_principals(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => Principal {
            identifier: Some(principal::Identifier::Any(true)),
        },
        1 => ids.pop().expect("one"),
        _ => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
        },
    }
}

/// Matched by no request.
pub(crate) fn no_principal() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }))),
    }
}

/// The RBAC filter for an inbound TCP port, counted under `stat_prefix`, or `None` when no
/// applying policy has rules. Only a rule's principals and IP blocks can apply to a byte
/// stream: a rule with only HTTP parts matches nothing here.
pub(crate) fn network_rbac(policies: &[&InboundPolicy], stat_prefix: &str) -> Option<Filter> {
    let (rules, shadow_rules) = rule_sets(policies, tcp_policy)?;
    let config = NetworkRbac {
        rules,
        stat_prefix: stat_prefix.to_string(),
        shadow_rules_stat_prefix: shadow_prefix(&shadow_rules),
        shadow_rules,
    };
    Some(network_filter(
        NETWORK_RBAC_FILTER,
        pack_sorted::<NetworkRbacProto>(&config),
    ))
}

fn shadow_prefix(shadow_rules: &Option<RbacRules>) -> String {
    match shadow_rules {
        Some(_) => RBAC_DRY_RUN_STAT_PREFIX.to_string(),
        None => String::new(),
    }
}

/// `(rules, shadow_rules)` from the enforced and the dry-run policies with rules; `None` when
/// there are neither. A set is absent when no policy feeds it (everything allowed), and present
/// but empty when its policies have only empty rule lists (everything denied).
fn rule_sets(
    policies: &[&InboundPolicy],
    to_policy: fn(&AuthzRule) -> Option<Policy>,
) -> Option<(Option<RbacRules>, Option<RbacRules>)> {
    let set = |dry_run: bool| {
        let with_rules: Vec<_> = policies
            .iter()
            .filter(|p| p.dry_run == dry_run)
            .filter_map(|p| p.rules.as_ref().map(|rules| (p.name.as_str(), rules)))
            .collect();
        if with_rules.is_empty() {
            return None;
        }
        let policies = with_rules
            .into_iter()
            .flat_map(|(name, rules)| {
                rules
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, rule)| Some((format!("{name}/{i}"), to_policy(rule)?)))
            })
            .collect();
        Some(RbacRules {
            action: RbacAction::Allow as i32,
            policies,
        })
    };
    let (rules, shadow_rules) = (set(false), set(true));
    (rules.is_some() || shadow_rules.is_some()).then_some((rules, shadow_rules))
}

// === rules ===

/// An HTTP request matches when every part the rule gives matches.
fn http_policy(rule: &AuthzRule) -> Option<Policy> {
    let paths = rule.paths.iter().map(path_permission).collect();
    let methods = rule
        .methods
        .iter()
        .map(|method| header_permission(":method", &ValueMatch::Exact(method.clone())))
        .collect();
    let headers = rule.headers.iter().map(|(name, value)| header_permission(name, value));
    let not_headers = rule.not_headers.iter().map(|(name, value)| Permission {
        rule: Some(permission::Rule::NotRule(Box::new(header_permission(name, value)))),
    });
    let parts: Vec<Permission> = [any_of(paths), any_of(methods)]
        .into_iter()
        .flatten()
        .chain(headers)
        .chain(not_headers)
        .collect();
    let permission = match parts.len() {
        0 => Permission {
            rule: Some(permission::Rule::Any(true)),
        },
        _ => all_of(parts),
    };
    Some(Policy {
        permissions: vec![permission],
        principals: vec![principal(rule)],
        ..Default::default()
    })
}

/// A TCP connection has only its peer to match on.
fn tcp_policy(rule: &AuthzRule) -> Option<Policy> {
    let http_only = (!rule.paths.is_empty()
        || !rule.methods.is_empty()
        || !rule.headers.is_empty()
        || !rule.not_headers.is_empty())
        && rule.principals.is_empty()
        && rule.ip_blocks.is_empty();
    if http_only {
        return None;
    }
    Some(Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![principal(rule)],
        ..Default::default()
    })
}

/// One of the rule's identities, from one of its IP blocks; `any` when it names neither.
fn principal(rule: &AuthzRule) -> Principal {
    let ids = rule.principals.iter().map(|p| authenticated(p)).collect();
    let ips = rule
        .ip_blocks
        .iter()
        .map(|block| Principal {
            identifier: Some(principal::Identifier::DirectRemoteIp(cidr(block))),
        })
        .collect();
    let parts: Vec<Principal> = [any_id(ids), any_id(ips)].into_iter().flatten().collect();
    match parts.len() {
        0 => Principal {
            identifier: Some(principal::Identifier::Any(true)),
        },
        1 => parts.into_iter().next().expect("one part"),
        _ => Principal {
            identifier: Some(principal::Identifier::AndIds(principal::Set { ids: parts })),
        },
    }
}

/// A peer whose certificate's URI SAN is `id`, or starts with it when it ends in `*` or `/`.
/// A bare `*` is any authenticated peer (Envoy refuses an empty prefix).
fn authenticated(id: &str) -> Principal {
    let matcher = match id.strip_suffix('*') {
        Some("") => None,
        Some(prefix) => Some(prefix_matcher(prefix)),
        None if id.ends_with('/') => Some(prefix_matcher(id)),
        None => Some(exact(id)),
    };
    Principal {
        identifier: Some(principal::Identifier::Authenticated(principal::Authenticated {
            principal_name: matcher,
        })),
    }
}

fn prefix_matcher(prefix: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(prefix.to_string())),
        ignore_case: false,
    }
}

/// `10.0.0.0/8`, or a bare address meaning just that host.
fn cidr(block: &str) -> CidrRange {
    let (address, len) = match block.split_once('/') {
        Some((address, len)) => (address, len.parse().ok()),
        None => (block, None),
    };
    let host_len = if address.contains(':') { 128 } else { 32 };
    CidrRange {
        address_prefix: address.to_string(),
        prefix_len: Some(UInt32Value {
            value: len.unwrap_or(host_len),
        }),
    }
}

fn path_permission(path: &PathMatch) -> Permission {
    let pattern = match path {
        PathMatch::Prefix(prefix) => MatchPattern::Prefix(prefix.clone()),
        PathMatch::Exact(path) => MatchPattern::Exact(path.clone()),
        PathMatch::Regex(regex) => MatchPattern::SafeRegex(regex_matcher(regex)),
    };
    Permission {
        rule: Some(permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case: false,
            })),
        })),
    }
}

fn header_permission(name: &str, value: &ValueMatch) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(header_value_matcher(name, value))),
    }
}

/// One permission of several (`None` for none), unwrapped when there is just one.
fn any_of(mut rules: Vec<Permission>) -> Option<Permission> {
    match rules.len() {
        0 => None,
        1 => rules.pop(),
        _ => Some(Permission {
            rule: Some(permission::Rule::OrRules(permission::Set { rules })),
        }),
    }
}

/// Every one of several permissions (at least one), unwrapped when there is just one.
fn all_of(mut rules: Vec<Permission>) -> Permission {
    if rules.len() == 1 {
        return rules.pop().expect("one rule");
    }
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn any_id(mut ids: Vec<Principal>) -> Option<Principal> {
    match ids.len() {
        0 => None,
        1 => ids.pop(),
        _ => Some(Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
        }),
    }
}

// === deterministic encoding ===
//
// `envoy.config.rbac.v3.RBAC.policies` is a protobuf map, which prost holds in a `HashMap` and
// writes in its random iteration order: equal configs would encode differently, and the xDS
// server (which versions by content) would push on every recompute. These mirror the messages
// we set, field for field and tag for tag, with the map as a `BTreeMap` so policies are written
// in name order; the bytes decode as the real messages.

/// `envoy.config.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, prost::Message)]
struct RbacRules {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(btree_map = "string, message", tag = "2")]
    policies: BTreeMap<String, Policy>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, prost::Message)]
struct HttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<RbacRules>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<RbacRules>,
    #[prost(string, tag = "3")]
    shadow_rules_stat_prefix: String,
}

/// `envoy.extensions.filters.http.rbac.v3.RBACPerRoute` (tag 1 is reserved).
#[derive(Clone, PartialEq, prost::Message)]
struct HttpRbacPerRoute {
    #[prost(message, optional, tag = "2")]
    rbac: Option<HttpRbac>,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
#[derive(Clone, PartialEq, prost::Message)]
struct NetworkRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<RbacRules>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<RbacRules>,
    #[prost(string, tag = "3")]
    stat_prefix: String,
    #[prost(string, tag = "5")]
    shadow_rules_stat_prefix: String,
}

type HttpRbacProto = envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
type HttpRbacPerRouteProto = envoy_types::pb::envoy::extensions::filters::http::rbac::v3::RbacPerRoute;
type NetworkRbacProto = envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac;

/// `message` as an `Any` of the Envoy type `Real` it mirrors.
fn pack_sorted<Real: Name>(message: &impl Message) -> Any {
    Any {
        type_url: Real::type_url(),
        value: message.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests;
