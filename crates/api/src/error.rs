//! Errors a user can act on: each names where the problem is and what is wrong.

use std::fmt;

/// One problem in one document of an input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentError {
    /// The file name, or `request` for an API body.
    pub source: String,
    /// 1-based position of the document in its input.
    pub document: usize,
    /// `Kind/namespace/name`, when the document got far enough to have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Dotted field path, such as `spec.http[0].forwardTo.destinations[1].weight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(resource) = &self.resource {
            write!(f, " ({resource})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The input was rejected as a whole; nothing from it may be applied.
    #[error("{} error(s) in input:\n{}", .0.len(), list(.0))]
    Invalid(Vec<DocumentError>),
    #[error("no resources found in {0}")]
    Empty(String),
}

fn list(errors: &[DocumentError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

impl ApiError {
    pub fn errors(&self) -> Vec<DocumentError> {
        match self {
            ApiError::Invalid(errors) => errors.clone(),
            ApiError::Empty(source) => vec![DocumentError {
                source: source.clone(),
                document: 0,
                resource: None,
                field: None,
                message: "no resources found".into(),
            }],
        }
    }
}
