//! TransformationPolicy checks: every Inja template parses, every extractor has one source and a
//! regex, and a template sets headers it may set. Each problem is `(field path, message)`.

use crate::envoy_limits::{check_no_control, check_regex};
use crate::traffic_policies::TransformationPolicySpec;
use crate::transformation::{InjaTransformation, parse_inja};

type Problems = Vec<(String, String)>;

fn push(problems: &mut Problems, field: impl Into<String>, message: impl Into<String>) {
    problems.push((field.into(), message.into()));
}

pub(crate) fn transformation_policy(problems: &mut Problems, spec: &TransformationPolicySpec) {
    let config = &spec.config;
    if let Some(template) = config.request.as_ref().and_then(|r| r.inja_template.as_ref()) {
        inja_transformation(problems, "spec.config.request.injaTemplate", template);
    }
    if let Some(template) = config.response.as_ref().and_then(|r| r.inja_template.as_ref()) {
        inja_transformation(problems, "spec.config.response.injaTemplate", template);
    }
}

fn check_template(problems: &mut Problems, field: &str, text: &str) {
    if let Err(message) = parse_inja(text) {
        push(problems, field, format!("the Inja template does not parse: {message}"));
    }
}

/// A header name, or a pseudo-header such as `:status`; lowercase letters only in the latter,
/// and never CR/LF or spaces.
fn check_header_name(problems: &mut Problems, field: &str, name: &str) {
    let token =
        |text: &str| !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let ok = match name.strip_prefix(':') {
        Some(pseudo) => token(pseudo) && pseudo.chars().all(|c| c.is_ascii_lowercase()),
        None => token(name),
    };
    if !ok {
        push(
            problems,
            field,
            format!(
                "{name:?} is not a header name: use letters, digits, '-' and '_' (or a :pseudo-header such as :status)"
            ),
        );
    }
}

fn inja_transformation(problems: &mut Problems, base: &str, template: &InjaTransformation) {
    for (name, value) in &template.headers {
        check_header_name(problems, &format!("{base}.headers"), name);
        check_template(problems, &format!("{base}.headers.{name}.text"), &value.text);
    }
    for (i, append) in template.headers_to_append.iter().enumerate() {
        check_header_name(problems, &format!("{base}.headersToAppend[{i}].key"), &append.key);
        check_template(
            problems,
            &format!("{base}.headersToAppend[{i}].value.text"),
            &append.value.text,
        );
    }
    for (i, name) in template.headers_to_remove.iter().enumerate() {
        check_header_name(problems, &format!("{base}.headersToRemove[{i}]"), name);
    }
    if let Some(body) = &template.body {
        check_template(problems, &format!("{base}.body.text"), &body.text);
    }
    let bodies = [
        template.body.is_some(),
        template.passthrough.is_some(),
        template.merge_extractors_to_body.is_some(),
    ];
    if bodies.iter().filter(|b| **b).count() > 1 {
        push(
            problems,
            base,
            "give only one of body, passthrough and mergeExtractorsToBody",
        );
    }
    if let Some(behavior) = &template.parse_body_behavior
        && !["ParseAsJson", "DontParse"].contains(&behavior.as_str())
    {
        push(
            problems,
            format!("{base}.parseBodyBehavior"),
            format!("{behavior:?} is not one of ParseAsJson, DontParse"),
        );
    }
    for (name, extraction) in &template.extractors {
        let here = format!("{base}.extractors.{name}");
        check_no_control(problems, &here, name);
        match (&extraction.header, &extraction.body) {
            (Some(header), None) => check_no_control(problems, &format!("{here}.header"), header),
            (None, Some(_)) => {}
            _ => push(problems, &here, "give exactly one source: header or body"),
        }
        if extraction.regex.is_empty() {
            push(
                problems,
                format!("{here}.regex"),
                "a regex is required (Gloo extracts nothing without one): use '.*' for the whole source",
            );
        } else {
            check_regex(problems, &format!("{here}.regex"), &extraction.regex);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_one;

    fn problems(config: &str) -> String {
        let yaml = format!(
            "apiVersion: trafficcontrol.policy.gloo.solo.io/v2\nkind: TransformationPolicy\nmetadata: {{name: t, namespace: demo}}\nspec:\n  config:\n{config}"
        );
        match parse_one("policy.yaml", &yaml) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn accepts_the_guides_templates() {
        let ok = "    request:\n      injaTemplate:\n        headers:\n          x-color: {text: '{{ Favorites.Color }}'}\n          x-id: {text: '{{ header(\"x-id\") }}'}\n        extractors:\n          foo: {header: ':path', regex: '(.*foo=([^&]*).*)', subgroup: 2}\n";
        assert_eq!(problems(ok), "");
    }

    #[test]
    fn names_the_field_of_a_template_that_does_not_parse() {
        let bad = "    response:\n      injaTemplate:\n        headers:\n          x-a: {text: '{{ header(\"x\") '}\n";
        let message = problems(bad);
        assert!(
            message.contains("spec.config.response.injaTemplate.headers.x-a.text"),
            "{message}"
        );
        assert!(message.contains("does not parse"), "{message}");
        let bad_body = "    request:\n      injaTemplate:\n        body: {text: '{{ }}'}\n";
        assert!(problems(bad_body).contains("spec.config.request.injaTemplate.body.text"));
    }

    #[test]
    fn refuses_bad_extractors_header_names_and_body_modes() {
        let no_regex = "    request:\n      injaTemplate:\n        extractors:\n          id: {header: x-id}\n";
        assert!(problems(no_regex).contains("injaTemplate.extractors.id.regex"));
        let two_sources = "    request:\n      injaTemplate:\n        extractors:\n          id: {header: x-id, body: {}, regex: '.*'}\n";
        assert!(problems(two_sources).contains("exactly one source"));
        let bad_regex =
            "    request:\n      injaTemplate:\n        extractors:\n          id: {body: {}, regex: '(('}\n";
        assert!(problems(bad_regex).contains("injaTemplate.extractors.id.regex"));
        let crlf = "    request:\n      injaTemplate:\n        headers:\n          \"x-a\\r\\nx-b\": {text: v}\n";
        assert!(problems(crlf).contains("is not a header name"));
        let both = "    request:\n      injaTemplate:\n        body: {text: x}\n        passthrough: {}\n";
        assert!(problems(both).contains("only one of body"));
        let behavior = "    request:\n      injaTemplate:\n        parseBodyBehavior: Yaml\n";
        assert!(problems(behavior).contains("parseBodyBehavior"));
    }
}
