//! Gloo Mesh 2.x's documented example configurations (`examples/`), one file per guide example,
//! each opening with the guide's URL and what the guide says it does, and the mesh they run on.
//!
//! ```text
//!  examples/       the guides' YAML, cluster and namespace names adapted at most
//!  tests/loads.rs  every example loads through Trellis's own apply parsing and admission
//!  behaves/        every example applied, unchanged, to a running bookinfo mesh (real Envoy),
//!                  and what its guide says it does checked request by request; these are
//!                  the `trellis` package's tests (`cargo test -p trellis --test gloo_<topic>`),
//!                  as they run the `trellis` binary Cargo builds for it
//!  bookinfo.rs     that mesh: two clusters, bookinfo's services on port 9080, Gloo's gateway
//! ```
//!
//! See `docs/gloo-compatibility.md` for the status of every kind and field.

pub mod bookinfo;

use std::path::{Path, PathBuf};

/// The examples' directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The text of one example, as its guide wrote it.
pub fn example(file: &str) -> String {
    let path = examples_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading example {}: {e}", path.display()))
}
