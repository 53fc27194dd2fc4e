//! The request an evaluator sees and the decision it returns.

use std::collections::BTreeMap;

/// What an evaluator sees of one HTTP request (from Envoy's CheckRequest attributes).
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    pub method: String,
    /// "http" or "https".
    pub scheme: String,
    /// The `:authority`.
    pub host: String,
    /// Path including the query string, as Envoy sends it.
    pub path: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    /// Peer IP.
    pub source_address: String,
    /// Peer SPIFFE ID when mTLS, else empty.
    pub source_principal: String,
    pub context_extensions: BTreeMap<String, String>,
    /// The request body, when the ExtAuthServer asks for it (`requestBody`); else empty.
    pub body: String,
}

/// One evaluator's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let the request through; add these headers to the upstream request.
    Allow { upstream_headers: Vec<(String, String)> },
    /// Refuse it with this status, response headers (e.g. www-authenticate, location, set-cookie) and body.
    Deny {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Outcome {
    /// Allow without adding headers.
    pub fn allow() -> Self {
        Outcome::Allow {
            upstream_headers: Vec::new(),
        }
    }

    /// Deny with this status, no headers and an empty body.
    pub fn deny(status: u16) -> Self {
        Outcome::Deny {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Outcome::Allow { .. })
    }
}
