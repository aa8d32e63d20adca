//! HMAC-SHA256 (RFC 2104) over the `sha2` crate wasmtime already builds, and a
//! constant-time tag comparison: the compile cache's authentication
//! ([`crate::cache`]). Written out (a dozen lines) rather than taken from the `hmac` crate,
//! whose `digest/mac` feature changes the features of the `sha2`/`digest` build wasmtime
//! shares and so rebuilds all of wasmtime.

use sha2::{Digest, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    block.fill(0);
    outer.finalize().into()
}

/// Compares a computed tag with a received one in time independent of where they differ.
pub fn equal(expected: &[u8; 32], received: &[u8]) -> bool {
    received.len() == expected.len()
        && std::hint::black_box(
            expected
                .iter()
                .zip(received)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b)),
        ) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_vectors() {
        // Test case 2: a short key.
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn equal_needs_every_byte() {
        let tag = hmac_sha256(b"k", &[b"m"]);
        assert!(equal(&tag, &tag));
        let mut other = tag;
        other[31] ^= 1;
        assert!(!equal(&tag, &other));
        assert!(!equal(&tag, &tag[..31]));
    }
}
