//! Hashes whose values must not change between builds or processes (std's `DefaultHasher`
//! makes no such promise): versions compared across the relay, stored token digests.

/// 64-bit FNV-1a, fed in pieces: `Fnv1a::new()`, [`Fnv1a::write`] each part, [`Fnv1a::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    pub const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// A stable 64-bit FNV-1a hash of `bytes`, used for content versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::new();
    hash.write(bytes);
    hash.finish()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn fnv1a_in_pieces_is_fnv1a_of_the_whole() {
        let mut hash = Fnv1a::new();
        hash.write(b"ab");
        hash.write(b"c");
        assert_eq!(hash.finish(), stable_hash(b"abc"));
    }

    #[test]
    fn sha256_hex_matches_known_vectors() {
        let cases: [(&[u8], &str); 2] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ];
        for (input, expected) in cases {
            assert_eq!(sha256_hex(input), expected);
        }
    }
}
