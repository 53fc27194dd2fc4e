use super::*;

/// The key of Gloo's jwt_policy reference example, as its YAML block (`|-`) reads: no final newline.
const GLOO_EXAMPLE_RSA: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnknfKiIDREaE/vxu8rtz
oMaPop6rsiX7GANCRcqFks0j96Gb+UssKD8zJs2JBvEe4n0wNKVeLRbOctII+ZEO
G8b+Dqig/1ubq3xiGbDBbZqHiFKjFQVUnII3Un9VRtDcJdgaaPGHnhlPs79sJNgQ
e6AWJmfAasdT7i3MVEW7/dXcROiMRGapmxv+nQbKdoeiCJDULRdMSodhg/WJw2sH
LLVxh4fPSF7cRxj36Y9FKWcGUH+YKe7n4gufAeEsHk+tPBndymYpmcMjb6W9HrJO
39vvyMTjLAUyElCEfeMqCpFBCElhaGbF8ZncbV6vvDEkOxMX/m1TYhoJr1E2U8y/
NwIDAQAB
-----END PUBLIC KEY-----";

/// `openssl ecparam -name prime256v1 -genkey | openssl ec -pubout`.
const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9E8w3Z6Y/aJYXRdaQxr0ZAOR9RlM
f/Ft2h22RWbcaB5wkRpLWhbo8yUYQ2hPWeM6oAb3jFklOFv3Z94MDwu/ng==
-----END PUBLIC KEY-----
";

fn only_key(jwks: &str) -> serde_json::Value {
    let set: serde_json::Value = serde_json::from_str(jwks).expect("JSON");
    let keys = set["keys"].as_array().expect("a keys list");
    assert_eq!(keys.len(), 1, "{set}");
    keys[0].clone()
}

#[test]
fn an_rsa_key_becomes_its_modulus_and_exponent() {
    assert!(is_pem(GLOO_EXAMPLE_RSA));
    let key = only_key(&pem_to_jwks(GLOO_EXAMPLE_RSA).expect("converts"));
    // Expected values from `openssl rsa -pubin -modulus`, base64url encoded.
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(
        key["n"],
        "nknfKiIDREaE_vxu8rtzoMaPop6rsiX7GANCRcqFks0j96Gb-UssKD8zJs2JBvEe4n0wNKVeLRbOctII-ZEOG8b-Dqig_1ubq3xiGbDBbZqHiFKjFQVUnII3Un9VRtDcJdgaaPGHnhlPs79sJNgQe6AWJmfAasdT7i3MVEW7_dXcROiMRGapmxv-nQbKdoeiCJDULRdMSodhg_WJw2sHLLVxh4fPSF7cRxj36Y9FKWcGUH-YKe7n4gufAeEsHk-tPBndymYpmcMjb6W9HrJO39vvyMTjLAUyElCEfeMqCpFBCElhaGbF8ZncbV6vvDEkOxMX_m1TYhoJr1E2U8y_Nw"
    );
}

#[test]
fn an_ec_key_becomes_its_curve_and_coordinates() {
    let key = only_key(&pem_to_jwks(P256).expect("converts"));
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["x"], "9E8w3Z6Y_aJYXRdaQxr0ZAOR9RlMf_Ft2h22RWbcaB4");
    assert_eq!(key["y"], "cJEaS1oW6PMlGENoT1njOqAG94xZJThb92feDA8Lv54");
}

#[test]
fn other_pem_blocks_and_garbage_are_refused() {
    let certificate = P256.replace("PUBLIC KEY", "CERTIFICATE");
    assert!(pem_to_jwks(&certificate).unwrap_err().contains("CERTIFICATE"));
    let truncated = P256.replace("f/Ft2h22RWbcaB5wkRpLWhbo8yUYQ2hPWeM6oAb3jFklOFv3Z94MDwu/ng==\n", "");
    assert!(pem_to_jwks(&truncated).is_err());
    assert!(!is_pem("{\"keys\": []}"));
}
