//! Gloo Mesh 2.x's documented example configurations (`examples/`), one file per guide example,
//! each opening with the guide's URL and what the guide says it does. `tests/loads.rs` applies
//! them through Trellis's own parsing; the behaviour each guide states is checked end to end
//! elsewhere. See `docs/gloo-compatibility.md` for the status of every kind and field.
