//! The one error type of the crate: what is wrong with an ext-auth document, and where.

/// A document or auth config the service cannot run. `at` is a path a person can follow to the
/// offending value, e.g. `configs[2] (opa1): opaAuth.query`.
#[derive(Debug, thiserror::Error)]
pub enum ExtAuthError {
    /// The document as a whole does not have the expected shape.
    #[error("ext-auth document: {at}: {message}")]
    Document { at: String, message: String },
    /// One auth config (selected by its `config_id`) is invalid.
    #[error("{id}: {at}: {message}")]
    Config { id: String, at: String, message: String },
}

impl ExtAuthError {
    pub(crate) fn config(id: &str, at: impl Into<String>, message: impl Into<String>) -> Self {
        ExtAuthError::Config {
            id: id.to_string(),
            at: at.into(),
            message: message.into(),
        }
    }
}
