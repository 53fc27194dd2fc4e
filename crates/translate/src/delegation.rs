//! RouteTable delegation: a route's `delegate` action hands what it matches to the routes of
//! child RouteTables. This pass turns a table's `http` list into the routes actually served,
//! each with the table that defines it; translation then treats them like any table's routes.
//!
//! ```text
//!  parent  /ratings ─delegate─▶ child-a  /v1 ─▶ ratings       =  /ratings/v1 ─▶ ratings (child-a)
//!          /reviews ─delegate─▶ child-b  /   ─▶ reviews          /reviews    ─▶ reviews (child-b)
//! ```
//!
//! Gloo Mesh 2.x semantics (route-delegation, route-matchers and route-labels concept pages,
//! https://docs.solo.io/gloo-mesh-enterprise/latest/traffic_management/concepts/route-tables/,
//! and `DelegateAction` in solo-io/solo-apis `networking/v2/route_table.proto`):
//! - `routeTables` selectors (labels, name, namespace, workspace) pick child tables: tables without
//!   hosts, in the parent's workspace or exported to it. Each selector's picks come oldest first.
//! - Child routes inherit the delegating route's matchers: a child path is appended to the
//!   parent's prefix (`/product-1` + `/foo` = `/product-1/foo`), headers and query parameters add
//!   up, a method must agree. Matchers that conflict replace the delegating route with a 500
//!   direct response (ROUTE_REPLACEMENT), with a WARNING on both tables.
//! - A route's labels are its table's `metadata.labels` overridden by its own; a child route's
//!   start from the delegating route's, then its table's, then its own (the later wins).
//! - `sortMethod: TABLE_WEIGHT` (default) orders child tables by `weight`, higher first, ties in
//!   selection order, each table's routes in its order. `ROUTE_SPECIFICITY` orders every route
//!   gathered (nested delegation included) by its most specific matcher: exact paths, then
//!   regexes, then prefixes, longer paths first; ties keep the table-weight order.
//! - Delegation nests; a table met again on the way down (a cycle) is not followed, with a
//!   WARNING naming the tables. A child no parent selects is simply not served.
//! - `allowedRoutes` filters only routes to cloud providers (AWS Lambda), which Trellis has no
//!   destination for: every route Trellis can express passes them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::rc::Rc;

use trellis_api::{
    DelegateAction, DelegateSortMethod, HeaderMatcher, HttpRoute, QueryParameterMatcher, RequestMatcher, Resource,
    RouteTableSpec, UriMatcher,
};
use trellis_model::Snapshot;

use crate::Warnings;
use crate::workspaces::Workspaces;

/// How many child tables and routes one top-level table may expand to: tables selecting each
/// other in layers (no cycle) would otherwise multiply without bound.
const WORK_LIMIT: usize = 100_000;

/// Every route table, oldest first: where delegation looks for children.
pub(crate) struct Tables<'s> {
    all: Vec<(&'s Resource, &'s RouteTableSpec)>,
    snapshot: &'s Snapshot,
    workspaces: &'s Workspaces,
    /// Child tables and routes expanded so far for the table being flattened.
    work: std::cell::Cell<usize>,
}

/// A route as served: a table's own route, or a child table's route under the route that
/// delegated to it.
pub(crate) struct EffectiveRoute<'s> {
    /// The table that defines the route (the child, for a delegated route).
    pub table: &'s Resource,
    /// `table`'s key, where its warnings go.
    pub table_key: Rc<str>,
    pub spec: &'s RouteTableSpec,
    /// Where the route is in `spec.http`, for field paths in warnings.
    pub index: usize,
    pub route: &'s HttpRoute,
    /// `namespace/table/route`, prefixed by the delegating route's name for a delegated one.
    pub name: String,
    /// The route's matchers combined with those it inherits, ORed; empty matches everything.
    pub matchers: Cow<'s, [RequestMatcher]>,
    /// What `applyToRoutes` selects the route by: inherited, table and route labels.
    pub labels: BTreeMap<String, String>,
    /// Set when the route cannot be served as configured: it answers 500 with this problem.
    pub replaced: Option<String>,
}

/// What a delegating route passes on to its children's routes.
struct Inherited {
    name: String,
    matchers: Vec<RequestMatcher>,
    labels: BTreeMap<String, String>,
}

impl<'s> Tables<'s> {
    pub(crate) fn new(snapshot: &'s Snapshot, workspaces: &'s Workspaces) -> Self {
        Tables {
            all: snapshot.route_tables().collect(),
            snapshot,
            workspaces,
            work: std::cell::Cell::new(0),
        }
    }

    /// The routes `spec` (of `table`) serves, delegation resolved, in match order.
    pub(crate) fn flatten(
        &self,
        table: &'s Resource,
        spec: &'s RouteTableSpec,
        warnings: &mut Warnings,
    ) -> Vec<EffectiveRoute<'s>> {
        self.work.set(0);
        let mut stack = vec![table.key().to_string()];
        // A top-level table inherits nothing, so nothing of it can conflict.
        self.expand(table, spec, None, &mut stack, warnings).unwrap_or_default()
    }

    /// The routes of one table under what it inherits; `Err` (the problem) when one of its
    /// routes' matchers conflicts with the inherited ones.
    fn expand(
        &self,
        table: &'s Resource,
        spec: &'s RouteTableSpec,
        inherited: Option<&Inherited>,
        stack: &mut Vec<String>,
        warnings: &mut Warnings,
    ) -> Result<Vec<EffectiveRoute<'s>>, String> {
        let key: Rc<str> = table.key().to_string().into();
        let mut routes = Vec::new();
        self.work.set(self.work.get() + 1 + spec.http.len());
        for (index, route) in spec.http.iter().enumerate() {
            let own_name = format!(
                "{}/{}/{}",
                table.metadata.namespace,
                table.metadata.name,
                if route.name.is_empty() {
                    index.to_string()
                } else {
                    route.name.clone()
                }
            );
            // Labels, weakest first: what the delegating route had, this table's, the route's.
            let labels = match inherited {
                None if table.metadata.labels.is_empty() => route.labels.clone(),
                _ => {
                    let mut labels = inherited.map(|p| p.labels.clone()).unwrap_or_default();
                    labels.extend(table.metadata.labels.clone());
                    labels.extend(route.labels.clone());
                    labels
                }
            };
            let (name, matchers) = match inherited {
                None => (own_name, Cow::Borrowed(route.matchers.as_slice())),
                Some(parent) => {
                    let matchers = combine(&parent.matchers, &route.matchers).map_err(|problem| {
                        let problem = format!(
                            "spec.http[{index}].matchers: {problem}, inherited from the delegating route {}",
                            parent.name
                        );
                        warnings.add(key.to_string(), format!("{problem}; the delegating route answers 500"));
                        problem
                    })?;
                    (format!("{}/{own_name}", parent.name), Cow::Owned(matchers))
                }
            };
            let Some(delegate) = &route.delegate else {
                routes.push(EffectiveRoute {
                    table,
                    table_key: key.clone(),
                    spec,
                    index,
                    route,
                    name,
                    matchers,
                    labels,
                    replaced: None,
                });
                continue;
            };
            let passed_on = Inherited {
                name: name.clone(),
                matchers: matchers.to_vec(),
                labels: labels.clone(),
            };
            match self.delegated(table, index, delegate, &passed_on, stack, warnings) {
                Ok(children) => routes.extend(children),
                Err(problem) => {
                    warnings.add(
                        key.to_string(),
                        format!("spec.http[{index}].delegate: {problem}; the route answers 500"),
                    );
                    routes.push(EffectiveRoute {
                        table,
                        table_key: key.clone(),
                        spec,
                        index,
                        route,
                        name,
                        matchers,
                        labels,
                        replaced: Some(problem),
                    });
                }
            }
        }
        Ok(routes)
    }

    /// The routes the delegating route `spec.http[index]` of `parent` stands for, ordered by
    /// its sort method.
    fn delegated(
        &self,
        parent: &'s Resource,
        index: usize,
        delegate: &DelegateAction,
        inherited: &Inherited,
        stack: &mut Vec<String>,
        warnings: &mut Warnings,
    ) -> Result<Vec<EffectiveRoute<'s>>, String> {
        let parent_key = parent.key().to_string();
        let mut children = self.select(parent, index, delegate, warnings);
        if children.is_empty() {
            warnings.add(
                parent_key.clone(),
                format!(
                    "spec.http[{index}].delegate.routeTables: selects no route table yet; the route serves nothing"
                ),
            );
        }
        // TABLE_WEIGHT, and the tie-break of ROUTE_SPECIFICITY: higher weight first, stable.
        children.sort_by_key(|(_, spec)| std::cmp::Reverse(spec.weight.unwrap_or(0)));
        let mut routes = Vec::new();
        for (child, spec) in children {
            let child_key = child.key().to_string();
            if stack.contains(&child_key) {
                let path = stack
                    .iter()
                    .chain([&child_key])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" -> ");
                warnings.add(
                    parent_key.clone(),
                    format!(
                        "spec.http[{index}].delegate: delegating to RouteTable {child_key} again makes a cycle ({path}); that table is not delegated to here"
                    ),
                );
                continue;
            }
            if self.work.get() > WORK_LIMIT {
                warnings.add(
                    stack[0].clone(),
                    format!(
                        "delegation below this table reaches more than {WORK_LIMIT} child tables and routes; the routes past that are not served"
                    ),
                );
                break;
            }
            stack.push(child_key.clone());
            let expanded = self.expand(child, spec, Some(inherited), stack, warnings);
            stack.pop();
            match expanded {
                Ok(child_routes) => routes.extend(child_routes),
                Err(problem) => return Err(format!("RouteTable {child_key}: {problem}")),
            }
        }
        if delegate.sort_method == Some(DelegateSortMethod::RouteSpecificity) {
            routes.sort_by_key(|route| specificity(&route.matchers));
        }
        Ok(routes)
    }

    /// The child tables `delegate` selects that `parent` may delegate to, in selection order.
    fn select(
        &self,
        parent: &Resource,
        index: usize,
        delegate: &DelegateAction,
        warnings: &mut Warnings,
    ) -> Vec<(&'s Resource, &'s RouteTableSpec)> {
        let parent_key = parent.key().to_string();
        let parent_workspace = self
            .workspaces
            .of_config_namespace(self.snapshot, &parent.metadata.namespace);
        let mut selected: Vec<(&Resource, &RouteTableSpec)> = Vec::new();
        for (s, selector) in delegate.route_tables.iter().enumerate() {
            let field = format!("spec.http[{index}].delegate.routeTables[{s}]");
            if !selector.cluster.is_empty() {
                warnings.add(
                    parent_key.clone(),
                    format!(
                        "{field}.cluster: route tables are mesh-wide configuration in Trellis; the cluster is ignored"
                    ),
                );
            }
            for &(child, spec) in &self.all {
                let meta = &child.metadata;
                let workspace = self.workspaces.of_config_namespace(self.snapshot, &meta.namespace);
                let matches = selector.labels.iter().all(|(k, v)| meta.labels.get(k) == Some(v))
                    && (selector.name.is_empty() || selector.name == meta.name)
                    && (selector.namespace.is_empty() || selector.namespace == meta.namespace)
                    && (selector.workspace.is_empty() || Some(selector.workspace.as_str()) == workspace);
                // A parent whose selector also matches itself is not told it has hosts; a
                // child that selects itself is a cycle, reported as such below.
                if !matches || (std::ptr::eq(child, parent) && !spec.hosts.is_empty()) {
                    continue;
                }
                let child_key = child.key().to_string();
                if !spec.hosts.is_empty() {
                    warnings.add(
                        parent_key.clone(),
                        format!(
                            "{field}: selects RouteTable {child_key}, which has hosts; only tables without hosts are delegated to, so it is skipped"
                        ),
                    );
                    continue;
                }
                let visible = match self.workspaces.visibility_of_resource(self.snapshot, child) {
                    None => true,
                    Some(seen_by) => parent_workspace.is_some_and(|w| seen_by.iter().any(|s| s == w)),
                };
                if !visible {
                    warnings.add(
                        parent_key.clone(),
                        format!(
                            "{field}: RouteTable {child_key} is not in this table's workspace nor exported to it; it is not delegated to"
                        ),
                    );
                    continue;
                }
                if !selected.iter().any(|(r, _)| std::ptr::eq(*r, child)) {
                    selected.push((child, spec));
                }
            }
        }
        selected
    }
}

/// Each parent matcher combined with each child matcher (both ORed lists; empty matches all).
fn combine(parent: &[RequestMatcher], child: &[RequestMatcher]) -> Result<Vec<RequestMatcher>, String> {
    if parent.is_empty() {
        return Ok(child.to_vec());
    }
    if child.is_empty() {
        return Ok(parent.to_vec());
    }
    let mut combined = Vec::with_capacity(parent.len() * child.len());
    for p in parent {
        for c in child {
            combined.push(combine_one(p, c)?);
        }
    }
    Ok(combined)
}

/// One request matcher under another: the child's path below the parent's prefix, and every
/// header, query parameter and method condition of both.
fn combine_one(parent: &RequestMatcher, child: &RequestMatcher) -> Result<RequestMatcher, String> {
    let uri = match (&parent.uri, &child.uri) {
        (None, uri) | (uri, None) => uri.clone(),
        (Some(p), Some(c)) => {
            let Some(prefix) = p.prefix.as_deref().filter(|_| p.exact.is_none() && p.regex.is_none()) else {
                return Err(
                    "a path under a delegating route that matches an exact path or a regex; only a prefix can be extended"
                        .to_string(),
                );
            };
            Some(UriMatcher {
                exact: c.exact.as_deref().map(|path| join(prefix, path)),
                prefix: c.prefix.as_deref().map(|path| join(prefix, path)),
                regex: c
                    .regex
                    .as_deref()
                    .map(|regex| format!("{}{regex}", trellis_api::regex_escape(prefix.trim_end_matches('/')))),
                ignore_case: p.ignore_case || c.ignore_case,
            })
        }
    };
    let method = match (parent.method.as_str(), child.method.as_str()) {
        ("", m) | (m, "") => m.to_string(),
        (p, c) if p.eq_ignore_ascii_case(c) => p.to_string(),
        (p, c) => return Err(format!("method {c} where the delegating route matches only {p}")),
    };
    for c in &child.headers {
        if parent.headers.iter().any(|p| headers_conflict(p, c)) {
            return Err(format!(
                "header {} with a value the delegating route does not allow",
                c.name
            ));
        }
    }
    for c in &child.query_parameters {
        if parent.query_parameters.iter().any(|p| parameters_conflict(p, c)) {
            return Err(format!(
                "query parameter {} with a value the delegating route does not allow",
                c.name
            ));
        }
    }
    Ok(RequestMatcher {
        name: child.name.clone(),
        uri,
        headers: parent.headers.iter().chain(&child.headers).cloned().collect(),
        query_parameters: parent
            .query_parameters
            .iter()
            .chain(&child.query_parameters)
            .cloned()
            .collect(),
        method,
    })
}

/// Two exact-value conditions on one header that no request meets both of.
fn headers_conflict(a: &HeaderMatcher, b: &HeaderMatcher) -> bool {
    fn exact(h: &HeaderMatcher) -> Option<&str> {
        h.value.as_deref().filter(|_| !h.regex && !h.invert_match)
    }
    a.name.eq_ignore_ascii_case(&b.name) && matches!((exact(a), exact(b)), (Some(x), Some(y)) if x != y)
}

fn parameters_conflict(a: &QueryParameterMatcher, b: &QueryParameterMatcher) -> bool {
    fn exact(q: &QueryParameterMatcher) -> Option<&str> {
        q.value.as_deref().filter(|_| !q.regex)
    }
    a.name == b.name && matches!((exact(a), exact(b)), (Some(x), Some(y)) if x != y)
}

/// `child` below `prefix`: `/product-1` and `/foo` make `/product-1/foo`; a child path of `/`
/// adds nothing.
fn join(prefix: &str, child: &str) -> String {
    if child == "/" {
        return prefix.to_string();
    }
    format!("{}{child}", prefix.trim_end_matches('/'))
}

/// Sort key of ROUTE_SPECIFICITY: the most specific of a route's matchers, most specific
/// smallest. Exact paths, then regexes (all equal), then prefixes; longer paths first.
fn specificity(matchers: &[RequestMatcher]) -> (u8, std::cmp::Reverse<usize>) {
    let one = |m: &RequestMatcher| match &m.uri {
        Some(UriMatcher { exact: Some(path), .. }) => (0, std::cmp::Reverse(path.len())),
        Some(UriMatcher { regex: Some(_), .. }) => (1, std::cmp::Reverse(0)),
        Some(UriMatcher { prefix: Some(path), .. }) => (2, std::cmp::Reverse(path.len())),
        _ => (2, std::cmp::Reverse(1)),
    };
    matchers.iter().map(one).min().unwrap_or((2, std::cmp::Reverse(1)))
}

#[cfg(test)]
mod tests;
