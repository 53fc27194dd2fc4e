//! Route transformations (TransformationPolicy) on stock Envoy: one fixed Lua script in the
//! connection manager, switched on per route by a `LuaPerRoute` that names it and carries the
//! route's templates as JSON data in its filter context. Nothing from a policy or a request is
//! ever part of the Lua code (see `transformation.lua`).
//!
//! The filter sits after authentication and authorization, just before the router: Gloo's
//! default phase for transformations is post-authz
//! (<https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/github.com.solo-io.gloo-mesh-enterprise.api.gloo.solo.io.policy.v2.trafficcontrol.transformation_policy/>).

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::filters::http::lua::v3::{Lua, LuaPerRoute, lua_per_route};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::{Any, Struct, Value as PbValue, value::Kind};
use envoy_types::util::pack_any;
use serde_json::{Value, json};
use trellis_model::ir::VirtualHost;
use trellis_model::transformation::{MessageTransform, Piece, Template, Transformation};

use crate::common::http_filter;

pub(crate) const LUA_FILTER: &str = "envoy.filters.http.lua";
/// The script's name in the filter's `source_codes`, which routes refer to.
const SCRIPT_NAME: &str = "trellis-transformation";
const SCRIPT: &str = include_str!("transformation.lua");
/// The most body a transformation reads, request or response: 1 MiB, Envoy's default
/// per-connection buffer limit. A request declaring more is refused (413); a response
/// declaring more passes untransformed (a longer chunked one meets Envoy's own limit).
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The Lua filter, off unless a route names the script; `None` when no route of these hosts
/// transforms anything.
pub(crate) fn lua_filter<'a>(hosts: impl IntoIterator<Item = &'a VirtualHost>) -> Option<HttpFilter> {
    let any = hosts
        .into_iter()
        .flat_map(|h| &h.routes)
        .any(|r| r.policies.transformation.is_some());
    if !any {
        return None;
    }
    let source = DataSource {
        specifier: Some(data_source::Specifier::InlineString(SCRIPT.to_string())),
        ..Default::default()
    };
    Some(HttpFilter {
        disabled: true,
        ..http_filter(
            LUA_FILTER,
            pack_any(Lua {
                // One entry: the map encodes the same way every time.
                source_codes: HashMap::from([(SCRIPT_NAME.to_string(), source)]),
                stat_prefix: "trellis_transformation".to_string(),
                ..Default::default()
            }),
        )
    })
}

/// The route's `LuaPerRoute`: the script, and the templates as one JSON string.
pub(crate) fn route_config(transformation: &Transformation) -> (String, Any) {
    let text = config_json(transformation).to_string();
    let context = Struct {
        fields: HashMap::from([(
            "transformation".to_string(),
            PbValue {
                kind: Some(Kind::StringValue(text)),
            },
        )]),
    };
    (
        LUA_FILTER.to_string(),
        pack_any(LuaPerRoute {
            filter_context: Some(context),
            r#override: Some(lua_per_route::Override::Name(SCRIPT_NAME.to_string())),
            ..Default::default()
        }),
    )
}

/// The JSON the script reads (its format is described at the top of `transformation.lua`).
pub(crate) fn config_json(transformation: &Transformation) -> Value {
    let mut config = json!({ "max": MAX_BODY_BYTES });
    if let Some(request) = &transformation.request {
        config["request"] = side(request);
    }
    if let Some(response) = &transformation.response {
        config["response"] = side(response);
        // Request headers a response template reads, kept from the request for it.
        let names: BTreeSet<&str> = response_templates(response)
            .flatten()
            .filter_map(|p| match p {
                Piece::RequestHeader(name) => Some(name.as_str()),
                _ => None,
            })
            .collect();
        if !names.is_empty() {
            config["requestHeaders"] = json!(names);
        }
    }
    config
}

fn response_templates(side: &MessageTransform) -> impl Iterator<Item = &Template> {
    side.set_headers
        .iter()
        .chain(&side.append_headers)
        .map(|(_, t)| t)
        .chain(&side.body)
}

fn side(side: &MessageTransform) -> Value {
    let headers =
        |list: &[(String, Template)]| -> Value { list.iter().map(|(name, t)| json!([name, template(t)])).collect() };
    let mut out = json!({
        "set": headers(&side.set_headers),
        "append": headers(&side.append_headers),
        "remove": side.remove_headers,
        "extract": side.extractors.iter().map(|x| {
            let mut e = json!({"n": x.name, "p": x.lua_pattern, "g": x.subgroup});
            if let Some(header) = &x.header {
                e["h"] = json!(header);
            }
            e
        }).collect::<Vec<_>>(),
        "passthrough": side.passthrough,
        "json": side.parse_json,
        "lenient": side.ignore_parse_error,
    });
    if let Some(body) = &side.body {
        out["body"] = template(body);
    }
    out
}

fn template(pieces: &Template) -> Value {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(text) => json!({ "t": text }),
            Piece::Header(name) => json!({ "h": name }),
            Piece::RequestHeader(name) => json!({ "rh": name }),
            Piece::Extraction(name) => json!({ "x": name }),
            Piece::Json(path) => json!({ "j": path }),
            Piece::Body => json!({ "b": true }),
        })
        .collect()
}

#[cfg(test)]
mod tests;
