//! A kind's spec schema, as trellis-api derives it from the parser's own types (JSON Schema
//! with `$defs`), made into what a CustomResourceDefinition accepts: a *structural* OpenAPI v3
//! schema, every `$ref` inlined, every node typed. `kubectl explain` then shows Gloo's fields,
//! and the API server itself refuses a value of the wrong type with the field's path.
//!
//! Two choices keep the API server from being stricter, or more silent, than Trellis:
//! - Objects keep unknown fields (`x-kubernetes-preserve-unknown-fields`): pruning would drop
//!   a misspelt field without a word; kept, it reaches the validating webhook, which refuses it
//!   with Trellis's message.
//! - What a structural schema cannot say (a field that is a string or a list, a one-of of
//!   objects, a recursive type) stays open, and no `default` is copied: the API server would
//!   write defaults into the user's objects.

use serde_json::{Map, Value, json};

/// A node that takes any value; the parser checks it.
fn open(description: Option<&Value>) -> Value {
    let mut node = json!({"x-kubernetes-preserve-unknown-fields": true});
    if let Some(text) = description {
        node["description"] = text.clone();
    }
    node
}

/// The structural form of `schema` (a schemars root with `$defs`).
pub fn structural(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    convert(schema, &defs, &mut Vec::new())
}

fn is_null(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null")) || schema.get("const") == Some(&Value::Null)
}

/// The strings a schema allows, when it is an enumeration of strings.
fn string_choices(schema: &Value) -> Option<Vec<Value>> {
    if let Some(Value::String(one)) = schema.get("const") {
        return Some(vec![Value::String(one.clone())]);
    }
    let choices = schema.get("enum")?.as_array()?;
    choices
        .iter()
        .filter(|v| !v.is_null())
        .map(|v| v.is_string().then(|| v.clone()))
        .collect()
}

fn convert(schema: &Value, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    let Some(node) = schema.as_object() else {
        // `true`: anything.
        return open(None);
    };
    let description = node.get("description");
    let mut out = convert_node(node, defs, stack);
    if let (Some(text), Some(target)) = (description, out.as_object_mut()) {
        target.entry("description").or_insert_with(|| text.clone());
    }
    out
}

fn convert_node(node: &Map<String, Value>, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    let description = node.get("description");
    if let Some(Value::String(reference)) = node.get("$ref") {
        let name = reference.trim_start_matches("#/$defs/").to_string();
        let Some(target) = defs.get(&name) else {
            return open(description);
        };
        if stack.contains(&name) {
            // A recursive type: its inner levels stay open.
            return open(description);
        }
        stack.push(name);
        let out = convert(target, defs, stack);
        stack.pop();
        return out;
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(variants)) = node.get(key) {
            return one_of(variants, description, defs, stack);
        }
    }
    if let Some(Value::Array(parts)) = node.get("allOf") {
        return match parts.as_slice() {
            [only] => convert(only, defs, stack),
            _ => open(description),
        };
    }
    let (types, nullable) = match node.get("type") {
        Some(Value::String(one)) => (vec![one.as_str()], false),
        Some(Value::Array(many)) => {
            let named: Vec<&str> = many.iter().filter_map(Value::as_str).collect();
            let nullable = named.contains(&"null");
            (named.into_iter().filter(|t| *t != "null").collect(), nullable)
        }
        _ => (Vec::new(), false),
    };
    let mut out = match types.as_slice() {
        [one] => typed(one, node, defs, stack),
        [] => match string_choices(&Value::Object(node.clone())) {
            Some(choices) => json!({"type": "string", "enum": choices}),
            None => open(description),
        },
        many if many.len() == 2 && many.contains(&"integer") && many.contains(&"string") => {
            json!({"x-kubernetes-int-or-string": true})
        }
        _ => open(description),
    };
    if nullable {
        out["nullable"] = json!(true);
    }
    out
}

fn one_of(
    variants: &[Value],
    description: Option<&Value>,
    defs: &Map<String, Value>,
    stack: &mut Vec<String>,
) -> Value {
    let present: Vec<&Value> = variants.iter().filter(|v| !is_null(v)).collect();
    let nullable = present.len() < variants.len();
    let mut out = if let [only] = present.as_slice() {
        convert(only, defs, stack)
    } else if let Some(choices) = present.iter().map(|v| string_choices(v)).collect::<Option<Vec<_>>>() {
        json!({"type": "string", "enum": choices.concat()})
    } else {
        let types: Vec<&str> = present.iter().filter_map(|v| v.get("type")?.as_str()).collect();
        if types.len() == present.len() && types.len() == 2 && types.contains(&"integer") && types.contains(&"string") {
            json!({"x-kubernetes-int-or-string": true})
        } else {
            open(description)
        }
    };
    if nullable {
        out["nullable"] = json!(true);
    }
    out
}

fn typed(kind: &str, node: &Map<String, Value>, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    match kind {
        "object" => object(node, defs, stack),
        "array" => {
            let items = node
                .get("items")
                .map_or_else(|| open(None), |items| convert(items, defs, stack));
            json!({"type": "array", "items": items})
        }
        "string" => {
            let mut out = json!({"type": "string"});
            if let Some(choices) = string_choices(&Value::Object(node.clone())) {
                out["enum"] = json!(choices);
            }
            out
        }
        "integer" | "number" => {
            let mut out = json!({"type": kind});
            if let Some(Value::String(format)) = node.get("format")
                && ["int32", "int64", "float", "double"].contains(&format.as_str())
            {
                out["format"] = json!(format);
            }
            for bound in ["minimum", "maximum"] {
                if let Some(value) = node.get(bound) {
                    out[bound] = value.clone();
                }
            }
            out
        }
        "boolean" => json!({"type": "boolean"}),
        _ => open(node.get("description")),
    }
}

fn object(node: &Map<String, Value>, defs: &Map<String, Value>, stack: &mut Vec<String>) -> Value {
    let mut out = json!({"type": "object"});
    let properties = node.get("properties").and_then(Value::as_object);
    if let Some(properties) = properties {
        let converted: Map<String, Value> = properties
            .iter()
            .map(|(name, schema)| (name.clone(), convert(schema, defs, stack)))
            .collect();
        out["properties"] = Value::Object(converted);
        if let Some(Value::Array(required)) = node.get("required") {
            out["required"] = json!(required);
        }
        // Unknown fields reach the webhook instead of being pruned (see the module's comment).
        out["x-kubernetes-preserve-unknown-fields"] = json!(true);
        return out;
    }
    match node.get("additionalProperties") {
        Some(values @ Value::Object(_)) => {
            out["additionalProperties"] = convert(values, defs, stack);
        }
        _ => {
            out["x-kubernetes-preserve-unknown-fields"] = json!(true);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_api::{Kind, spec_schema};

    /// Every node of a structural schema has a type, or says it takes anything.
    fn assert_structural(node: &Value, path: &str) {
        let object = node.as_object().unwrap_or_else(|| panic!("{path}: not an object"));
        let open = object.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
            || object.get("x-kubernetes-int-or-string") == Some(&json!(true));
        assert!(open || object.contains_key("type"), "{path}: no type in {node}");
        for forbidden in ["$ref", "anyOf", "oneOf", "allOf", "default", "$defs", "const"] {
            assert!(!object.contains_key(forbidden), "{path}: {forbidden}");
        }
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            assert!(!object.contains_key("additionalProperties"), "{path}");
            for (name, child) in properties {
                assert_structural(child, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = object.get("items") {
            assert_structural(items, &format!("{path}[]"));
        }
        if let Some(values @ Value::Object(_)) = object.get("additionalProperties") {
            assert_structural(values, &format!("{path}{{}}"));
        }
    }

    #[test]
    fn every_kinds_spec_schema_is_structural_and_typed_where_trellis_knows_the_field() {
        for kind in Kind::ALL {
            assert_structural(&structural(&spec_schema(kind)), &format!("{kind}.spec"));
        }
        let destination = structural(&spec_schema(Kind::VirtualDestination));
        let port = &destination["properties"]["ports"]["items"];
        assert_eq!(port["properties"]["number"]["type"], "integer");
        assert_eq!(port["required"], json!(["number"]));
        assert_eq!(port["properties"]["targetPort"]["type"], "object");
        assert_eq!(destination["properties"]["hosts"]["items"]["type"], "string");
        assert_eq!(destination["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            destination["properties"]["hosts"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("Host names")),
            "{destination}"
        );
    }
}
