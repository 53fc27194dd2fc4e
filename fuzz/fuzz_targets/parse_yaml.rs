//! `parse_documents` on arbitrary text: it may refuse anything, but must never panic, overflow
//! the stack or run away with memory. An accepted input must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(resources) = trellis_api::parse_documents("fuzz.yaml", text) {
        for resource in resources {
            // What the server stores is what it parsed: serializing it and parsing it again
            // must give the same resource.
            let json = serde_json::to_string(&resource.to_value()).expect("serializable");
            let again = trellis_api::parse_one("fuzz.json", &json).expect("a stored resource parses again");
            assert_eq!(again, resource);
        }
    }
});
