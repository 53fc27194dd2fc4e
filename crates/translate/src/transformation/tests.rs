use trellis_api::{Spec, parse_one};
use trellis_model::transformation::Piece;

use super::transformation;
use crate::Warnings;

fn translate(config: &str) -> (Option<trellis_model::transformation::Transformation>, Vec<String>) {
    let yaml = format!(
        "apiVersion: trafficcontrol.policy.gloo.solo.io/v2\nkind: TransformationPolicy\nmetadata: {{name: t, namespace: demo}}\nspec:\n  config:\n{config}"
    );
    let resource = parse_one("policy.yaml", &yaml).unwrap();
    let Spec::TransformationPolicy(spec) = &resource.spec else {
        unreachable!()
    };
    let mut warnings = Warnings::default();
    let out = transformation(&resource, spec, &mut warnings);
    (out, warnings.0.into_values().flatten().collect())
}

#[test]
fn renders_headers_from_headers_extractions_and_json_fields() {
    let (out, warnings) = translate(
        "    request:
      injaTemplate:
        headers:
          x-color: {text: 'c={{ Favorites.Color }}'}
          X-Copy: {text: '{{ header(\"X-Id\") }}'}
          x-foo: {text: '{{ foo }}'}
        extractors:
          foo: {header: ':path', regex: '(.*foo=([^&]*).*)', subgroup: 2}
    response:
      injaTemplate:
        parseBodyBehavior: DontParse
        headers:
          x-req: {text: '{{ request_header(\"x-id\") }}'}
        body: {text: 'replaced: {{ body() }}'}
",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let out = out.unwrap();
    assert_eq!(out.name, "demo/t");
    let request = out.request.unwrap();
    assert_eq!(
        request.set_headers,
        vec![
            (
                "x-color".to_string(),
                vec![
                    Piece::Text("c=".into()),
                    Piece::Json(vec!["Favorites".into(), "Color".into()])
                ]
            ),
            ("x-copy".to_string(), vec![Piece::Header("x-id".into())]),
            ("x-foo".to_string(), vec![Piece::Extraction("foo".into())]),
        ]
    );
    assert!(request.parse_json && !request.passthrough);
    assert_eq!(request.extractors[0].header.as_deref(), Some(":path"));
    assert_eq!(request.extractors[0].subgroup, 2);
    let response = out.response.unwrap();
    assert!(!response.parse_json);
    assert_eq!(response.set_headers[0].1, vec![Piece::RequestHeader("x-id".into())]);
    assert_eq!(response.body, Some(vec![Piece::Text("replaced: ".into()), Piece::Body]));
}

#[test]
fn warns_naming_each_field_it_does_not_apply() {
    let (out, warnings) = translate(
        "    phase: {preAuthz: {}}
    request:
      recalculateRoutingDestination: true
      injaTemplate:
        dynamicMetadataValues: [{key: foo, value: {text: x}}]
        headers:
          x-cond: {text: '{% if header(\"a\") == \"b\" %}yes{% endif %}'}
          x-b64: {text: '{{ base64_encode(header(\"a\")) }}'}
          x-ok: {text: ok}
        extractors:
          alt: {header: x-a, regex: 'a|b'}
",
    );
    let all = warnings.join("\n");
    for field in [
        "spec.config.phase",
        "spec.config.request.recalculateRoutingDestination",
        "spec.config.request.injaTemplate.dynamicMetadataValues",
        "spec.config.request.injaTemplate.headers.x-cond.text",
        "spec.config.request.injaTemplate.headers.x-b64.text",
        "spec.config.request.injaTemplate.extractors.alt.regex",
    ] {
        assert!(all.contains(field), "no warning names {field}: {all}");
    }
    let request = out.unwrap().request.unwrap();
    assert_eq!(
        request.set_headers,
        vec![("x-ok".to_string(), vec![Piece::Text("ok".into())])]
    );
    assert!(request.extractors.is_empty());
}

#[test]
fn advanced_templates_are_not_applied() {
    let (out, warnings) = translate(
        "    request:
      injaTemplate:
        advancedTemplates: true
        headers: {x-a: {text: '{{ a/b }}'}}
",
    );
    assert!(out.is_none());
    assert!(
        warnings
            .join("\n")
            .contains("spec.config.request.injaTemplate.advancedTemplates")
    );
}

#[test]
fn a_dotted_extractor_name_is_the_extraction_not_a_body_path() {
    // Gloo merges extractions into the JSON context under their dotted names.
    let (out, warnings) = translate(
        "    request:
      injaTemplate:
        headers:
          x-host: {text: '{{ host.name }}'}
        extractors:
          host.name: {header: host, regex: '.*'}
",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let request = out.unwrap().request.unwrap();
    assert_eq!(request.set_headers[0].1, vec![Piece::Extraction("host.name".into())]);
    assert_eq!(request.extractors[0].lua_pattern, "^[^\n]*$");
}
