//! Request and response transformations of a route (TransformationPolicy), already reduced to
//! what a proxy does: render header and body templates made of literal text and values read
//! from headers, regex extractions and the JSON body.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transformation {
    /// The TransformationPolicy, `namespace/name`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<MessageTransform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<MessageTransform>,
}

/// One side's template. Order of work (Gloo's): read the body (unless `passthrough`), parse it
/// as JSON when asked (a body that is not JSON fails the message with 400 unless
/// `ignoreParseError`), run the extractors, render every template against the message as it
/// came, then set headers, remove headers, append headers, replace the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageTransform {
    /// Header name (lowercase) and template; an empty rendering removes the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_headers: Vec<(String, Template)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub append_headers: Vec<(String, Template)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Template>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extractors: Vec<Extractor>,
    /// The body is neither read nor parsed (Gloo's `passthrough: {}`).
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub parse_json: bool,
    #[serde(default)]
    pub ignore_parse_error: bool,
}

pub type Template = Vec<Piece>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Piece {
    Text(String),
    /// A header of the message being transformed (lowercase name); empty when absent.
    Header(String),
    /// A request header, in a response template.
    RequestHeader(String),
    /// An extractor's value; empty when its pattern did not match.
    Extraction(String),
    /// A value in the JSON body by path (object keys, array indexes); a missing value fails the
    /// message with 400, as Inja's "variable not found" fails Gloo's transformation.
    Json(Vec<String>),
    /// The whole body as read.
    Body,
}

/// A value taken from a header or the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extractor {
    pub name: String,
    /// The header read (lowercase); `None` reads the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The policy's regex rewritten as an anchored Lua pattern with the same captures: the
    /// proxies run transformations in Envoy's Lua filter, which has no regex engine.
    pub lua_pattern: String,
    /// The capture taken; 0 is the whole source.
    pub subgroup: u32,
}
