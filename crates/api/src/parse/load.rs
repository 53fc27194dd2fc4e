//! One YAML (or JSON) document to a `serde_json::Value`, refusing what a plain
//! `Value::deserialize` lets through silently: a key given twice in one mapping (serde_json keeps
//! the last, so `weight: 1` then `weight: 100` would apply 100 with no word), and nesting deep
//! enough to exhaust the stack of whoever walks the value next.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// No resource needs more than a dozen levels; the ext-auth configs are the deepest. The limit
/// keeps recursive code that walks a value (validation, translation, serialization) far from the
/// end of a thread's stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// What loading found besides the value: duplicate keys by path, and the path where nesting
/// went too deep (loading stops there).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub duplicates: Vec<String>,
    pub too_deep: Option<String>,
}

/// Every document of `text`, in order, each with what loading found; an error (the message to
/// show) ends the list, since a YAML stream cannot be resynchronised after a syntax error.
///
/// Text that is one JSON value is read by a JSON parser: YAML is almost a superset of JSON, but
/// refuses characters JSON allows raw in strings (DEL, C1 controls), which the fuzzer found.
pub(crate) fn documents(text: &str) -> Vec<Result<(Value, Findings), String>> {
    if text.trim_start().starts_with(['{', '[']) {
        let findings = RefCell::new(Findings::default());
        let mut json = serde_json::Deserializer::from_str(text);
        if let Ok(value) = load(&mut json, &findings)
            && json.end().is_ok()
        {
            return vec![Ok((value, findings.into_inner()))];
        }
        // Not JSON after all, e.g. a YAML flow mapping such as `{kind: RouteTable}`.
    }
    let mut documents = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let findings = RefCell::new(Findings::default());
        match load(document, &findings) {
            Ok(value) => documents.push(Ok((value, findings.into_inner()))),
            Err(error) => {
                documents.push(Err(match findings.into_inner().too_deep {
                    Some(_) => error.to_string(),
                    None => format!("malformed YAML: {error}"),
                }));
                break;
            }
        }
    }
    documents
}

/// Deserializes one document, recording duplicate keys (at any depth) in `findings`.
pub(crate) fn load<'de, D: de::Deserializer<'de>>(
    document: D,
    findings: &RefCell<Findings>,
) -> Result<Value, D::Error> {
    ValueSeed {
        path: String::new(),
        depth: 0,
        findings,
    }
    .deserialize(document)
}

struct ValueSeed<'f> {
    path: String,
    depth: usize,
    findings: &'f RefCell<Findings>,
}

impl ValueSeed<'_> {
    fn child(&self, path: String) -> ValueSeed<'_> {
        ValueSeed {
            path,
            depth: self.depth + 1,
            findings: self.findings,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            let path = if self.path.is_empty() { "the top" } else { &self.path };
            self.findings.borrow_mut().too_deep = Some(path.to_string());
            return Err(E::custom(format!(
                "the document nests deeper than {MAX_DEPTH} levels (at {path})"
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        // Out of JSON's integer range: keep it as serde_json would, as the nearest float.
        Ok(serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Like `serde_json::Value`: NaN and infinities have no JSON form.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child(format!("{}[{}]", self.path, items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let value = map.next_value_seed(self.child(path.clone()))?;
            if object.insert(key, value).is_some() {
                self.findings.borrow_mut().duplicates.push(path);
            }
        }
        Ok(Value::Object(object))
    }
}
