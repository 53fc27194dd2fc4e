//! TransformationPolicy's templates as the mesh IR's [`Transformation`]: Inja templates become
//! lists of pieces (text, header, request header, extraction, JSON body value, body), regex
//! extractors become Lua patterns. What Trellis does not apply gets a WARNING naming the field:
//! a template using Inja beyond that subset (statements, filters, other functions) is left out
//! whole rather than rendered half.

mod lua_pattern;

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_api::{Expr, InjaTransformation, Resource, Segment, TransformationPolicySpec, parse_inja};
use trellis_model::transformation::{Extractor, MessageTransform, Piece, Template, Transformation};

use crate::Warnings;

/// The policy's transformation; `None` when neither side is left to apply.
pub(crate) fn transformation(
    resource: &Resource,
    spec: &TransformationPolicySpec,
    warnings: &mut Warnings,
) -> Option<Transformation> {
    let key = resource.key().to_string();
    let mut warn = |message: String| warnings.add(&key, message);
    let config = &spec.config;
    if config.phase.is_some() {
        warn(
            "spec.config.phase is not applied yet: transformations run after authentication and authorization"
                .to_string(),
        );
    }
    let mut request = None;
    if let Some(r) = &config.request {
        if r.recalculate_routing_destination {
            warn("spec.config.request.recalculateRoutingDestination is not applied yet: the route chosen before the transformation is kept".to_string());
        }
        unapplied(&mut warn, "spec.config.request", &r.other);
        request = r
            .inja_template
            .as_ref()
            .and_then(|t| message("spec.config.request.injaTemplate", t, false, &mut warn));
    }
    let mut response = None;
    if let Some(r) = &config.response {
        unapplied(&mut warn, "spec.config.response", &r.other);
        response = r
            .inja_template
            .as_ref()
            .and_then(|t| message("spec.config.response.injaTemplate", t, true, &mut warn));
    }
    if request.is_none() && response.is_none() {
        warn("no request or response template to apply: the selected routes are unchanged".to_string());
        return None;
    }
    Some(Transformation {
        name: format!("{}/{}", resource.metadata.namespace, resource.metadata.name),
        request,
        response,
    })
}

fn unapplied(warn: &mut impl FnMut(String), base: &str, other: &BTreeMap<String, Value>) {
    for field in other.keys() {
        warn(format!("{base}.{field} is not applied yet"));
    }
}

fn message(
    base: &str,
    template: &InjaTransformation,
    response: bool,
    warn: &mut impl FnMut(String),
) -> Option<MessageTransform> {
    if template.advanced_templates {
        warn(format!(
            "{base}.advancedTemplates (JSON pointer notation) is not applied yet: this template is not applied"
        ));
        return None;
    }
    unapplied(warn, base, &template.other);
    if template.merge_extractors_to_body.is_some() {
        warn(format!(
            "{base}.mergeExtractorsToBody is not applied yet: the body is unchanged"
        ));
    }
    let passthrough = template.passthrough.is_some();
    let mut extractors = Vec::new();
    for (name, extraction) in &template.extractors {
        let here = format!("{base}.extractors.{name}");
        if !extraction.other.is_empty() {
            let fields: Vec<&str> = extraction.other.keys().map(String::as_str).collect();
            warn(format!(
                "{here}.{} is not applied yet: this extractor is left out (it renders empty)",
                fields.join(", ")
            ));
            continue;
        }
        let (pattern, groups) = match lua_pattern::lua_pattern(&extraction.regex) {
            Ok(found) => found,
            Err(reason) => {
                warn(format!(
                    "{here}.regex is not applied: {reason}; this extractor is left out (it renders empty)"
                ));
                continue;
            }
        };
        if extraction.subgroup > groups {
            warn(format!(
                "{here}.subgroup {} is not applied: the regex has {groups} groups; this extractor renders empty",
                extraction.subgroup
            ));
            continue;
        }
        extractors.push(Extractor {
            name: name.clone(),
            header: extraction.header.as_ref().map(|h| h.to_ascii_lowercase()),
            lua_pattern: pattern,
            subgroup: extraction.subgroup,
        });
    }
    let names: Vec<&str> = template.extractors.keys().map(String::as_str).collect();
    let mut render = |field: String, text: &str| -> Option<Template> {
        match pieces(text, &names, response) {
            Ok(pieces) => Some(pieces),
            Err(what) => {
                warn(format!(
                    "{field} uses {what}, which Trellis does not apply yet: this template is left out"
                ));
                None
            }
        }
    };
    let mut set_headers: Vec<(String, Template)> = template
        .headers
        .iter()
        .filter_map(|(name, value)| {
            let pieces = render(format!("{base}.headers.{name}.text"), &value.text)?;
            Some((name.to_ascii_lowercase(), pieces))
        })
        .collect();
    // Names are case-insensitive: sorted once lowercase, the output does not depend on case.
    set_headers.sort_by(|a, b| a.0.cmp(&b.0));
    let append_headers = template
        .headers_to_append
        .iter()
        .enumerate()
        .filter_map(|(i, append)| {
            let pieces = render(format!("{base}.headersToAppend[{i}].value.text"), &append.value.text)?;
            Some((append.key.to_ascii_lowercase(), pieces))
        })
        .collect();
    let body = template
        .body
        .as_ref()
        .and_then(|body| render(format!("{base}.body.text"), &body.text));
    Some(MessageTransform {
        set_headers,
        append_headers,
        remove_headers: template
            .headers_to_remove
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        body,
        extractors,
        passthrough,
        parse_json: !passthrough && template.parse_body_behavior.as_deref() != Some("DontParse"),
        ignore_parse_error: template.ignore_error_on_parse,
    })
}

/// A template's pieces, or what in it is beyond the subset. The validator has already parsed
/// every template, so a parse error here only repeats it.
fn pieces(text: &str, extractors: &[&str], response: bool) -> Result<Template, String> {
    let mut out = Vec::new();
    for segment in parse_inja(text)? {
        let piece = match segment {
            Segment::Text(text) => Piece::Text(text),
            Segment::Statement(statement) => return Err(format!("the statement {{% {statement} %}}")),
            // Gloo merges extractions into the template's JSON context under their (dotted)
            // names, so `{{ name }}` and `{{ a.b }}` reach an extractor called `name` or `a.b`.
            Segment::Expr(Expr::Path(path)) if extractors.contains(&path.join(".").as_str()) => {
                Piece::Extraction(path.join("."))
            }
            Segment::Expr(Expr::Path(path)) => Piece::Json(path),
            Segment::Expr(Expr::Call { name, args }) => match (name.as_str(), &args[..]) {
                ("header", [header]) => Piece::Header(header.to_ascii_lowercase()),
                ("request_header", [header]) if response => Piece::RequestHeader(header.to_ascii_lowercase()),
                ("request_header", [header]) => Piece::Header(header.to_ascii_lowercase()),
                ("extraction", [name]) => Piece::Extraction(name.clone()),
                ("body", []) => Piece::Body,
                ("context", []) => Piece::Json(Vec::new()),
                _ => return Err(format!("the function {name}() with {} arguments", args.len())),
            },
            Segment::Expr(Expr::Other(expr)) => return Err(format!("the expression {{{{ {expr} }}}}")),
        };
        out.push(piece);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
