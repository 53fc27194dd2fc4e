//! `parse_documents` on JSON: the API's body format. Seeded with the examples as JSON, so the
//! fuzzer explores JSON syntax (escapes, numbers, nesting) rather than YAML's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = trellis_api::parse_documents("fuzz.json", text);
    // Whatever serde_json reads as one JSON value, the YAML reader must read too (JSON is YAML's
    // subset): it may refuse the resource, but not call valid JSON malformed.
    if serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
        && let Err(error) = &parsed
    {
        for e in error.errors() {
            assert!(
                !e.message.starts_with("malformed YAML"),
                "valid JSON refused as malformed: {e}"
            );
        }
    }
});
