use envoy_types::pb::envoy::extensions::filters::http::lua::v3::{LuaPerRoute, lua_per_route};
use prost::Message;
use serde_json::json;
use trellis_model::ir::{Route, RouteMatch, VirtualHost};
use trellis_model::transformation::{Extractor, MessageTransform, Piece, Transformation};

use super::*;
use crate::testing::mk_forward;

fn mk_transformation() -> Transformation {
    Transformation {
        name: "demo/t".to_string(),
        request: Some(MessageTransform {
            set_headers: vec![(
                "x-color".to_string(),
                vec![Piece::Text("c=".into()), Piece::Json(vec!["a".into(), "b".into()])],
            )],
            extractors: vec![Extractor {
                name: "id".to_string(),
                header: Some(":path".to_string()),
                lua_pattern: "^([^\n]*)$".to_string(),
                subgroup: 1,
            }],
            parse_json: true,
            ..Default::default()
        }),
        response: Some(MessageTransform {
            set_headers: vec![("x-req".to_string(), vec![Piece::RequestHeader("x-id".into())])],
            body: Some(vec![Piece::Body]),
            ..Default::default()
        }),
    }
}

fn mk_host(transformation: Option<Transformation>) -> VirtualHost {
    let mut route = Route {
        name: "r".to_string(),
        matcher: RouteMatch::default(),
        action: mk_forward(&[("backend", 1)]),
        policies: Default::default(),
    };
    route.policies.transformation = transformation.map(Box::new);
    VirtualHost {
        name: "backend".to_string(),
        domains: vec!["backend".to_string()],
        routes: vec![route],
        workspaces: None,
        clients: None,
    }
}

#[test]
fn the_route_config_carries_the_templates_as_data_for_the_fixed_script() {
    let config = config_json(&mk_transformation());
    assert_eq!(config["max"], json!(MAX_BODY_BYTES));
    assert_eq!(
        config["request"]["set"],
        json!([["x-color", [{"t": "c="}, {"j": ["a", "b"]}]]])
    );
    assert_eq!(
        config["request"]["extract"],
        json!([{"n": "id", "h": ":path", "p": "^([^\n]*)$", "g": 1}])
    );
    assert_eq!(config["request"]["json"], json!(true));
    assert_eq!(config["response"]["body"], json!([{"b": true}]));
    assert_eq!(
        config["requestHeaders"],
        json!(["x-id"]),
        "the response reads x-id from the request"
    );

    let (name, any) = route_config(&mk_transformation());
    assert_eq!(name, LUA_FILTER);
    let per_route = LuaPerRoute::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        per_route.r#override,
        Some(lua_per_route::Override::Name(SCRIPT_NAME.to_string()))
    );
    let context = per_route.filter_context.unwrap();
    let Some(Kind::StringValue(text)) = &context.fields["transformation"].kind else {
        panic!("no transformation in the filter context")
    };
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), config);
}

#[test]
fn the_lua_filter_is_there_only_when_a_route_transforms_and_is_off_by_default() {
    assert!(lua_filter([&mk_host(None)]).is_none());
    let filter = lua_filter([&mk_host(None), &mk_host(Some(mk_transformation()))]).unwrap();
    assert!(
        filter.disabled,
        "routes without a transformation must not run the script"
    );
    assert_eq!(filter.name, LUA_FILTER);
}

#[test]
fn the_script_is_fixed_text() {
    // Nothing from a policy is spliced into the code: the same bytes whatever the config.
    let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) =
        lua_filter([&mk_host(Some(mk_transformation()))]).unwrap().config_type
    else {
        panic!("no typed config")
    };
    let lua = Lua::decode(any.value.as_slice()).unwrap();
    let Some(data_source::Specifier::InlineString(code)) = &lua.source_codes[SCRIPT_NAME].specifier else {
        panic!("no inline script")
    };
    assert_eq!(code, SCRIPT);
    assert!(!code.contains("x-color"));
}
