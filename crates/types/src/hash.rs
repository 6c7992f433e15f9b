//! SHA-256 NAR hashes and the encodings Nix prints them in.
//!
//! Nix writes the same hash as base16 (`QueryPathInfo` on the wire, `db.sqlite`),
//! nix-base32 (`sha256:1abc…` in registration files, store path hash parts) and
//! SRI base64 (`sha256-…` in `nix path-info --json`). Import accepts all of them;
//! the index stores the raw 32 bytes.
//!
//! All decoding works on bytes and checks lengths first, so no input (any
//! UTF-8, any length) panics: it decodes or is refused.

use base64::Engine as _;
use std::fmt;

/// The alphabet of Nix's own base-32: digits and lowercase letters minus e, o, u, t.
pub const NIX32_ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of a nix-base32 encoding of `n` bytes (0 for none: `n * 8 - 1`
/// would underflow, and encoding an empty digest from an import must not panic).
pub const fn nix32_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Encode bytes in Nix's base-32 (least significant 5-bit group printed last).
pub fn nix32_encode(bytes: &[u8]) -> String {
    let len = nix32_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (bytes[i] as u16) >> j;
        let hi = if i + 1 < bytes.len() {
            (bytes[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(NIX32_ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decode Nix base-32 into exactly `N` bytes; `None` for a wrong length,
/// a character outside the alphabet, or bits set beyond the hash size.
pub fn nix32_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != nix32_len(N) {
        return None;
    }
    let mut out = [0u8; N];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = match NIX32_DIGIT[c as usize] {
            0xff => return None,
            d => d as u16,
        };
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (digit << j) as u8;
        let carry = (digit << j) >> 8;
        if i + 1 < N {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return None;
        }
    }
    Some(out)
}

/// Decode Nix base-32 into `n` bytes (for lengths known only at run time).
pub fn nix32_decode_vec(s: &str, n: usize) -> Option<Vec<u8>> {
    match n {
        16 => nix32_decode::<16>(s).map(|a| a.to_vec()),
        20 => nix32_decode::<20>(s).map(|a| a.to_vec()),
        32 => nix32_decode::<32>(s).map(|a| a.to_vec()),
        64 => nix32_decode::<64>(s).map(|a| a.to_vec()),
        _ => None,
    }
}

/// True if every character is in the nix-base32 alphabet (byte-wise: a
/// multi-byte character is simply outside it).
pub fn is_nix32(s: &str) -> bool {
    s.bytes().all(is_nix32_byte)
}

/// True if `c` is a nix-base32 digit.
pub(crate) fn is_nix32_byte(c: u8) -> bool {
    NIX32_DIGIT[c as usize] != 0xff
}

/// Digit value of each byte in nix-base32, 0xff for bytes outside it.
const NIX32_DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        t[NIX32_ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Digest length in bytes of a hash algorithm as Nix names it in content
/// addresses (`md5`, `sha1`, `sha256`, `sha512`); `None` for any other.
pub fn digest_len(algo: &str) -> Option<usize> {
    Some(match algo {
        "md5" => 16,
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        _ => return None,
    })
}

pub fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let b = s.as_bytes();
    for i in 0..N {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A SHA-256 hash of a NAR serialization.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash(pub [u8; 32]);

/// A NAR hash string in none of the encodings Nix writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid NAR hash '{input}': {reason} (expected sha256 as 'sha256:<base16|nix32|base64>', 'sha256-<base64>' or bare base16)")]
pub struct HashParseError {
    pub input: String,
    pub reason: &'static str,
}

impl NarHash {
    /// Parse any form Nix prints a SHA-256 in.
    pub fn parse(s: &str) -> Result<Self, HashParseError> {
        let err = |reason| HashParseError {
            input: s.chars().take(120).collect(),
            reason,
        };
        let (algo, rest, sri) = if let Some((a, r)) = s.split_once(':') {
            (Some(a), r, false)
        } else if let Some((a, r)) = s.split_once('-') {
            (Some(a), r, true)
        } else {
            (None, s, false)
        };
        if let Some(a) = algo {
            if a != "sha256" {
                return Err(err("only sha256 NAR hashes are supported"));
            }
        }
        if sri {
            return Self::from_base64(rest).ok_or_else(|| err("bad base64 in SRI hash"));
        }
        match rest.len() {
            64 => hex_decode::<32>(rest)
                .map(NarHash)
                .ok_or_else(|| err("bad base16 digit")),
            52 => nix32_decode::<32>(rest)
                .map(NarHash)
                .ok_or_else(|| err("bad nix-base32 digit")),
            44 => Self::from_base64(rest).ok_or_else(|| err("bad base64")),
            _ => Err(err("wrong length for a sha256 hash")),
        }
    }

    fn from_base64(s: &str) -> Option<Self> {
        let v = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
        Some(NarHash(v.try_into().ok()?))
    }

    /// Base16 without the algorithm prefix: what `QueryPathInfo` sends.
    pub fn to_base16(&self) -> String {
        hex_encode(&self.0)
    }

    /// `sha256:<nix32>`: what `nix-store --dump-db` and `nix-store -q --hash` print.
    pub fn to_nix32_prefixed(&self) -> String {
        format!("sha256:{}", nix32_encode(&self.0))
    }

    /// `sha256-<base64>`: the SRI form of `nix path-info --json`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_sri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn nix32_of_known_hash() {
        // sha256("") in nix-base32, as `nix hash convert --to nix32` prints it.
        let h: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(nix32_encode(&h), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(
            nix32_decode::<32>("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
            Some(h)
        );
    }

    #[test]
    fn nix32_of_nothing_is_empty() {
        assert_eq!(nix32_len(0), 0);
        assert_eq!(nix32_encode(&[]), "");
        assert_eq!(nix32_decode::<0>(""), Some([]));
    }

    #[test]
    fn nix32_rejects_overflow_and_bad_chars() {
        // The first digit of a 52-char 32-byte hash carries only one bit.
        assert!(nix32_decode::<32>("zmdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").is_none());
        assert!(nix32_decode::<32>("emdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").is_none());
        assert!(nix32_decode::<20>("short").is_none());
    }

    #[test]
    fn parses_every_printed_form() {
        let h = NarHash(Sha256::digest(b"abc").into());
        for s in [
            h.to_base16(),
            format!("sha256:{}", h.to_base16()),
            h.to_nix32_prefixed(),
            h.to_sri(),
        ] {
            assert_eq!(NarHash::parse(&s), Ok(h), "{s}");
        }
        assert!(NarHash::parse("md5:00").is_err());
        assert!(NarHash::parse("sha256:xyz").is_err());
    }

    /// A multi-byte character at every byte offset of each encoding's
    /// length: refused, never a panic (the lengths are in bytes, so the
    /// right byte length with a character straddling a digit boundary must
    /// not be sliced).
    #[test]
    fn multibyte_input_at_every_offset_is_refused() {
        let h = NarHash(Sha256::digest(b"abc").into());
        for good in [h.to_base16(), nix32_encode(&h.0), h.to_sri()[7..].to_owned()] {
            for c in ['Б', '€', '😀'] {
                for at in 0..=good.len() {
                    // Same byte length as `good`: the character replaces bytes.
                    let mut b = good.as_bytes().to_vec();
                    let mut enc = [0u8; 4];
                    let cb = c.encode_utf8(&mut enc).as_bytes();
                    b.splice(at..(at + cb.len()).min(b.len()), cb.iter().copied());
                    let s = String::from_utf8(b).unwrap();
                    for form in [s.clone(), format!("sha256:{s}"), format!("sha256-{s}")] {
                        assert!(NarHash::parse(&form).is_err(), "{form}");
                    }
                    assert!(nix32_decode::<32>(&s).is_none(), "{s}");
                    assert!(nix32_decode_vec(&s, 20).is_none(), "{s}");
                    assert!(!is_nix32(&s), "{s}");
                }
            }
        }
    }
}
