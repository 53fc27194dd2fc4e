//! Apache's `$apr1$` password hash (MD5-crypt with Apache's magic), as `htpasswd -m` writes it.

use crate::md5::md5;

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MAGIC: &[u8] = b"$apr1$";

/// The hash part of `$apr1$<salt>$<hash>` (22 characters) for `password` and `salt`; the salt
/// is cut to 8 bytes, as Apache does.
pub(crate) fn apr1_hash(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alternate = md5(&[password, salt, password].concat());

    let mut context = [password, MAGIC, salt].concat();
    let mut remaining = password.len();
    while remaining > 0 {
        let take = remaining.min(16);
        context.extend_from_slice(&alternate[..take]);
        remaining -= take;
    }
    // The original C code mixes in a zero byte or the first password byte per bit of the length.
    let mut bits = password.len();
    while bits > 0 {
        context.push(if bits & 1 == 1 {
            0
        } else {
            password.first().copied().unwrap_or(0)
        });
        bits >>= 1;
    }
    let mut digest = md5(&context);

    // 1000 rounds make brute force slower; the mix per round is part of the format.
    for round in 0..1000 {
        let mut next = Vec::with_capacity(password.len() * 2 + 16 + salt.len());
        if round % 2 == 1 {
            next.extend_from_slice(password);
        } else {
            next.extend_from_slice(&digest);
        }
        if round % 3 != 0 {
            next.extend_from_slice(salt);
        }
        if round % 7 != 0 {
            next.extend_from_slice(password);
        }
        if round % 2 == 1 {
            next.extend_from_slice(&digest);
        } else {
            next.extend_from_slice(password);
        }
        digest = md5(&next);
    }

    let d = digest;
    let mut out = String::with_capacity(22);
    let groups = [
        (d[0], d[6], d[12]),
        (d[1], d[7], d[13]),
        (d[2], d[8], d[14]),
        (d[3], d[9], d[15]),
        (d[4], d[10], d[5]),
    ];
    for (a, b, c) in groups {
        push_base64(&mut out, (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c), 4);
    }
    push_base64(&mut out, u32::from(d[11]), 2);
    out
}

fn push_base64(out: &mut String, mut value: u32, count: usize) {
    for _ in 0..count {
        out.push(ITOA64[(value & 0x3f) as usize] as char);
        value >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_htpasswd_and_openssl_output() {
        // The first from Gloo's docs (`htpasswd -nbm user password`); all from `openssl passwd -apr1 -salt`.
        let cases = [
            ("password", "TYiryv0/", "8BvzLUO9IfGPGGsPnAgSu1"),
            ("myPassword", "r3uu3vI/", "18po8d2cNPxJ6huuIZRya1"),
            ("", "abcdefgh", "L.PT565ESX4Tp2bqNs7Ie."),
            (
                "a-much-longer-password-than-sixteen-bytes",
                "saltsalt",
                "lF5vuc/g9XBLDmjXiENqA/",
            ),
        ];
        for (password, salt, expected) in cases {
            assert_eq!(
                apr1_hash(password.as_bytes(), salt.as_bytes()),
                expected,
                "{password:?} {salt:?}"
            );
        }
    }
}
