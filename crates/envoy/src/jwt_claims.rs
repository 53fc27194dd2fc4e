//! JWTPolicy `claims` and `requiredScopes`: checked, per route, by an RBAC filter after the JWT
//! filter, on the payload the JWT filter writes to dynamic metadata (`payload_in_metadata`,
//! keyed by the provider's name).
//!
//! ```text
//!  token ─▶ jwt_authn (verifies; payload ─▶ metadata["<provider>"]) ─▶ rbac (per route: claims, scopes) ─▶ …
//! ```
//!
//! A route's rule passes when the payload of any one of its providers satisfies every claim
//! matcher and has every required scope; otherwise the request gets 403. With no verified token
//! (`validationPolicy` letting a request through without one) there is no payload, so a route
//! with claims refuses it.

use envoy_types::pb::envoy::config::rbac::v3::{MetadataSource, Principal, SourcedMetadata, principal};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    DoubleMatcher, ListMatcher, MetadataMatcher, StringMatcher, ValueMatcher, double_matcher, list_matcher,
    metadata_matcher::{PathSegment, path_segment::Segment},
    string_matcher::MatchPattern as StringPattern,
    value_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::Any;
use trellis_model::ir::VirtualHost;
use trellis_model::policy::{ClaimRule, JwtRequirement};

use crate::http_policies::JWT_FILTER;
use crate::routes::regex_matcher;

/// The claim OAuth scopes are in, space-separated (RFC 8693 section 4.2).
const SCOPE_CLAIM: &str = "scope";

/// Whether any route of `hosts` checks claims or scopes: then the listener needs the RBAC
/// filter that enforces them.
pub(crate) fn any_route_checks_claims<'a>(hosts: impl IntoIterator<Item = &'a VirtualHost>) -> bool {
    hosts
        .into_iter()
        .flat_map(|host| &host.routes)
        .filter_map(|route| route.policies.jwt.as_deref())
        .any(checks_claims)
}

fn checks_claims(jwt: &JwtRequirement) -> bool {
    !jwt.claims.is_empty() || !jwt.required_scopes.is_empty()
}

/// The per-route RBAC config enforcing `jwt`'s claims and scopes, or `None` when it has none.
pub(crate) fn route_config(jwt: &JwtRequirement) -> Option<(String, Any)> {
    if !checks_claims(jwt) {
        return None;
    }
    let by_provider: Vec<Principal> = jwt.providers.iter().map(|p| payload_satisfies(&p.name, jwt)).collect();
    // No provider: no payload can ever satisfy the rule (translation answers 401 anyway).
    let principal = crate::authz::any_principal(by_provider).unwrap_or_else(crate::authz::no_principal);
    Some(crate::authz::http_rbac_allow(
        &format!("jwt-claims/{}", jwt.name),
        principal,
    ))
}

/// Every claim rule and every scope, on the payload `provider` verified.
fn payload_satisfies(provider: &str, jwt: &JwtRequirement) -> Principal {
    let claims = jwt.claims.iter().map(|rule| claim_rule(provider, rule));
    let scopes = jwt.required_scopes.iter().map(|scope| {
        // A string of space-separated scopes, or a list of them.
        let word = format!("(^|.* ){}( .*|$)", escape_regex(scope));
        metadata(
            provider,
            &[SCOPE_CLAIM.to_string()],
            vec![
                string(StringPattern::SafeRegex(regex_matcher(&word))),
                in_list(exact(scope)),
            ],
        )
    });
    crate::authz::all_principals(claims.chain(scopes).collect())
}

fn claim_rule(provider: &str, rule: &ClaimRule) -> Principal {
    let matches = |value: &str| metadata(provider, &rule.path, claim_value(value));
    let allowed = crate::authz::any_principal(rule.values.iter().map(|v| matches(v)).collect());
    let denied =
        crate::authz::any_principal(rule.not_values.iter().map(|v| matches(v)).collect()).map(|denied| Principal {
            identifier: Some(principal::Identifier::NotId(Box::new(denied))),
        });
    crate::authz::all_principals(allowed.into_iter().chain(denied).collect())
}

/// A claim's value as Gloo writes it: `*` any, `*suffix`, `prefix*`, or exact; matching a
/// string, an element of a list, or a number or boolean written the same way.
fn claim_value(value: &str) -> Vec<ValueMatcher> {
    if value == "*" {
        return vec![ValueMatcher {
            match_pattern: Some(MatchPattern::PresentMatch(true)),
        }];
    }
    let pattern = if let Some(suffix) = value.strip_prefix('*') {
        StringPattern::Suffix(suffix.to_string())
    } else if let Some(prefix) = value.strip_suffix('*') {
        StringPattern::Prefix(prefix.to_string())
    } else {
        StringPattern::Exact(value.to_string())
    };
    let mut alternatives = vec![string(pattern.clone()), in_list(string(pattern))];
    if let Ok(flag) = value.parse::<bool>() {
        alternatives.push(ValueMatcher {
            match_pattern: Some(MatchPattern::BoolMatch(flag)),
        });
    }
    if let Ok(number) = value.parse::<f64>() {
        alternatives.push(ValueMatcher {
            match_pattern: Some(MatchPattern::DoubleMatch(DoubleMatcher {
                match_pattern: Some(double_matcher::MatchPattern::Exact(number)),
            })),
        });
    }
    alternatives
}

/// `text` as an RE2 pattern matching itself literally.
fn escape_regex(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn string(pattern: StringPattern) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(MatchPattern::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case: false,
        })),
    }
}

fn exact(value: &str) -> ValueMatcher {
    string(StringPattern::Exact(value.to_string()))
}

fn in_list(element: ValueMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(MatchPattern::ListMatch(Box::new(ListMatcher {
            match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(element))),
        }))),
    }
}

/// The payload `provider` verified has, at `path`, a value one of `alternatives` matches.
fn metadata(provider: &str, path: &[String], alternatives: Vec<ValueMatcher>) -> Principal {
    let segments: Vec<PathSegment> = std::iter::once(provider)
        .chain(path.iter().map(String::as_str))
        .map(|key| PathSegment {
            segment: Some(Segment::Key(key.to_string())),
        })
        .collect();
    // RBAC has no "any of these values": one metadata principal per alternative.
    let principals = alternatives
        .into_iter()
        .map(|value| Principal {
            identifier: Some(principal::Identifier::SourcedMetadata(SourcedMetadata {
                metadata_matcher: Some(MetadataMatcher {
                    filter: JWT_FILTER.to_string(),
                    path: segments.clone(),
                    value: Some(value),
                    invert: false,
                }),
                metadata_source: MetadataSource::Dynamic as i32,
            })),
        })
        .collect();
    crate::authz::any_principal(principals).unwrap_or_else(crate::authz::no_principal)
}

#[cfg(test)]
mod tests;
