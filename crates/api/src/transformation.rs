//! TransformationPolicy's `config.request` and `config.response`: Gloo's Inja transformation
//! template (`envoy.api.v2.filter.http.TransformationTemplate`), and the syntax of its Inja
//! template strings.
//!
//! Field names and meanings follow
//! <https://docs.solo.io/gloo-mesh-enterprise/latest/reference/api/github.com.solo-io.gloo-mesh-enterprise.api.gloo.solo.io.policy.v2.trafficcontrol.transformation_policy/>
//! and Gloo's transformation guide
//! (<https://docs.solo.io/gloo-edge/latest/guides/traffic_management/request_processing/transformations/>).
//! Fields Trellis does not apply are kept (`other`), so the translator can name them in a WARNING.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestTransformation {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recalculate_routing_destination: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inja_template: Option<InjaTransformation>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseTransformation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inja_template: Option<InjaTransformation>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One transformation template: header and body templates, and the extractors they can use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjaTransformation {
    /// Headers set (replaced) to a rendered template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, InjaText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_append: Vec<HeaderToAppend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_remove: Vec<String>,
    /// The new body; only one of `body`, `passthrough` and `mergeExtractorsToBody`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<InjaText>,
    /// `{}`: the body is neither read nor parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_extractors_to_body: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extractors: BTreeMap<String, Extraction>,
    /// `ParseAsJson` (the default) or `DontParse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_body_behavior: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_error_on_parse: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advanced_templates: bool,
    /// Everything else (`dynamicMetadataValues`, `escapeCharacters`, `mergeJsonKeys`, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `{text: "<inja template>"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjaText {
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderToAppend {
    pub key: String,
    #[serde(default)]
    pub value: InjaText,
}

/// A named value taken from a header or the body by a regex that must match all of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Extraction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// `{}`: the body is the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default)]
    pub regex: String,
    /// The capture group taken; 0 (the default) is the whole match.
    #[serde(default)]
    pub subgroup: u32,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

// === Inja template syntax ===

/// A piece of a parsed Inja template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    /// `{{ ... }}`.
    Expr(Expr),
    /// `{% ... %}` (conditions, loops, assignments): kept as written.
    Statement(String),
}

/// What is inside `{{ }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `name("literal", ...)`: a function call whose arguments are all string literals.
    Call { name: String, args: Vec<String> },
    /// `a.b.0.c`: an extractor by name, or a path into the JSON body.
    Path(Vec<String>),
    /// Anything else that is well formed (operators, filters, numbers...), as written.
    Other(String),
}

/// Parses an Inja template string; an error says what is wrong (an unclosed `{{`, an
/// unterminated string, unbalanced parentheses, an empty expression).
pub fn parse_inja(template: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let close = match after.chars().next() {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                text.push_str(&rest[..=start]);
                rest = after;
                continue;
            }
        };
        text.push_str(&rest[..start]);
        let body_start = start + 2;
        let Some(len) = find_close(&rest[body_start..], close) else {
            return Err(format!(
                "{:?} at byte {} is not closed by {close:?}",
                &rest[start..body_start],
                template.len() - rest.len() + start
            ));
        };
        let inner = rest[body_start..body_start + len].trim();
        match close {
            "}}" => {
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Expr(parse_expr(inner)?));
            }
            "%}" => {
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Statement(inner.to_string()));
            }
            _ => {} // a comment renders to nothing
        }
        rest = &rest[body_start + len + 2..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(segments)
}

/// Where `close` ends the expression starting at `text`, skipping string literals.
fn find_close(text: &str, close: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if text[i..].starts_with(close) {
            return Some(i);
        }
    }
    None
}

fn parse_expr(inner: &str) -> Result<Expr, String> {
    if inner.is_empty() {
        return Err("an empty {{ }} expression".to_string());
    }
    check_balanced(inner)?;
    if let Some(path) = parse_path(inner) {
        return Ok(Expr::Path(path));
    }
    if let Some(open) = inner.find('(')
        && inner.ends_with(')')
        && is_identifier(inner[..open].trim())
        && let Some(args) = string_args(&inner[open + 1..inner.len() - 1])
    {
        return Ok(Expr::Call {
            name: inner[..open].trim().to_string(),
            args,
        });
    }
    Ok(Expr::Other(inner.to_string()))
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `a.b.0`: identifiers (Gloo's extractor names may hold `-`) and array indexes.
fn parse_path(text: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = text.split('.').collect();
    let first_ok = is_identifier(parts[0]);
    let rest_ok = parts[1..]
        .iter()
        .all(|p| is_identifier(p) || (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit())));
    (first_ok && rest_ok && !matches!(text, "true" | "false" | "null"))
        .then(|| parts.iter().map(|p| p.to_string()).collect())
}

/// `"a", "b"` as strings; `None` when an argument is not a plain string literal.
fn string_args(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let mut args = Vec::new();
    let mut rest = text;
    loop {
        let literal = rest.strip_prefix('"')?;
        let end = find_string_end(literal)?;
        let value: String = serde_json::from_str(&rest[..end + 2]).ok()?;
        args.push(value);
        rest = literal[end + 1..].trim_start();
        if rest.is_empty() {
            return Some(args);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

/// The index of the closing quote of a string literal whose opening quote was just before.
fn find_string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(i),
            _ => {}
        }
    }
    None
}

fn check_balanced(expr: &str) -> Result<(), String> {
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    for c in expr.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("{expr:?} closes a parenthesis it did not open"));
                }
            }
            _ => {}
        }
    }
    if in_string {
        return Err(format!("{expr:?} has an unterminated string"));
    }
    if depth != 0 {
        return Err(format!("{expr:?} leaves a parenthesis open"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[&str]) -> Segment {
        Segment::Expr(Expr::Call {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }

    #[test]
    fn parses_text_calls_and_paths() {
        let parsed =
            parse_inja(r#"id={{ header("x-id") }}; c={{Favorites.Color}} {# note #}{{ my-extractor }}"#).unwrap();
        assert_eq!(
            parsed,
            vec![
                Segment::Text("id=".into()),
                call("header", &["x-id"]),
                Segment::Text("; c=".into()),
                Segment::Expr(Expr::Path(vec!["Favorites".into(), "Color".into()])),
                Segment::Text(" ".into()),
                Segment::Expr(Expr::Path(vec!["my-extractor".into()])),
            ]
        );
        assert_eq!(
            parse_inja("{ \"a\": 1 }").unwrap(),
            vec![Segment::Text("{ \"a\": 1 }".into())]
        );
        assert_eq!(parse_inja("{{ body() }}").unwrap(), vec![call("body", &[])]);
        assert_eq!(
            parse_inja(r#"{{ header("a}}b") }}"#).unwrap(),
            vec![call("header", &["a}}b"])],
            "a closing brace inside a string literal does not end the expression"
        );
    }

    #[test]
    fn keeps_what_it_does_not_interpret() {
        assert_eq!(
            parse_inja(r#"{% if header(":status") == "404" %}x{% endif %}"#).unwrap(),
            vec![
                Segment::Statement(r#"if header(":status") == "404""#.into()),
                Segment::Text("x".into()),
                Segment::Statement("endif".into()),
            ]
        );
        assert_eq!(
            parse_inja("{{ base64_encode(header(\"a\")) }}").unwrap(),
            vec![Segment::Expr(Expr::Other("base64_encode(header(\"a\"))".into()))]
        );
        assert_eq!(
            parse_inja("{{ a + 1 }}").unwrap(),
            vec![Segment::Expr(Expr::Other("a + 1".into()))]
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "{{ header(\"a\") ",
            "{{ }}",
            "{{ header(\"a) }}",
            "{{ f(a }}",
            "{{ f) }}",
            "{% if x ",
            "{# x",
        ] {
            assert!(parse_inja(bad).is_err(), "{bad:?} parsed");
        }
    }
}
