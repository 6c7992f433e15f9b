//! The stored forms of the index's columns, each fact once and compact
//! (schema version 4), and their mapping to and from the store types.
//!
//! - A base name (`paths.base_name`, `paths.deriver`) is a BLOB: the hash
//!   part's 20 bytes (its nix-base32 decoded; 32 characters are exactly 160
//!   bits, so every hash part maps to one key and back) followed by the name
//!   after the `-`. Equality of keys is equality of base names; their order
//!   is not the base names' order, so what must be sorted by base name is
//!   sorted after reading.
//! - A path's references (`paths.refs`) are the referenced rows' ids, as
//!   LEB128 varints in ascending order; the base names are read from those
//!   rows. The `refs` table holds the same pairs keyed the other way round,
//!   for QueryReferrers only.
//! - A content address (`paths.ca`) whose digest is a nix-base32 sha256 is
//!   a BLOB: the text before the digest, then its 32 bytes; any other is
//!   kept as TEXT. Either reads back as exactly the string written.
//!
//! Invariant: every reader checks what it decodes and returns a conversion
//! error naming the damage, never panics, on a damaged or hand-edited row.

use rusqlite::types::{Type, Value, ValueRef};

use snix_lower_store_types::hash::{nix32_decode, nix32_encode, NIX32_ALPHABET};
use snix_lower_store_types::StorePath;

/// Bytes of a decoded hash part.
const HASH_BYTES: usize = 20;
/// Characters of a hash part.
const HASH_CHARS: usize = 32;
/// Bytes of a sha256 digest.
const SHA256_BYTES: usize = 32;
/// Characters of a nix-base32 sha256 digest.
const SHA256_CHARS: usize = 52;

/// A conversion error for column `col` of a damaged row.
fn damaged(col: usize, ty: Type, why: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, ty, format!("damaged index row: {}", why.into()).into())
}

/// The stored key of `p`: its hash part's 20 bytes, then its name.
pub(crate) fn key(p: &StorePath) -> Vec<u8> {
    let mut out = Vec::with_capacity(HASH_BYTES + p.name().len());
    // A StorePath's hash part is 32 nix-base32 characters: it decodes.
    out.extend_from_slice(&nix32_decode::<HASH_BYTES>(p.hash_part()).unwrap_or_default());
    out.extend_from_slice(p.name().as_bytes());
    out
}

/// The key range holding every name with hash part `hash_part` (`None` for a
/// string that is not one): `[lo, hi)`.
pub(crate) fn hash_part_range(hash_part: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = nix32_decode::<HASH_BYTES>(hash_part)?.to_vec();
    // Names are ASCII (below 0x80): nothing after the hash sorts above 0xff.
    let mut hi = lo.clone();
    hi.push(0xff);
    Some((lo, hi))
}

/// The store path a stored key names (column `col`, for the error).
pub(crate) fn path_of(col: usize, k: &[u8]) -> rusqlite::Result<StorePath> {
    if k.len() <= HASH_BYTES {
        return Err(damaged(
            col,
            Type::Blob,
            format!("a base name key of {} bytes", k.len()),
        ));
    }
    let (hash, name) = k.split_at(HASH_BYTES);
    // The base name built as bytes in one allocation, checked as UTF-8 once
    // and then as a base name (QueryPathInfo decodes one per reference).
    // Digit n (written at 31 - n) is bits 5n..5n+5 of the little-endian
    // hash: 8 digits per 5 bytes.
    let mut digits = [0u8; HASH_CHARS + 1];
    for (g, five) in hash.chunks_exact(5).enumerate() {
        let mut w = [0u8; 8];
        w[..5].copy_from_slice(five);
        let w = u64::from_le_bytes(w);
        for d in 0..8 {
            digits[HASH_CHARS - 1 - (g * 8 + d)] = NIX32_ALPHABET[((w >> (5 * d)) & 0x1f) as usize];
        }
    }
    digits[HASH_CHARS] = b'-';
    let mut b = Vec::with_capacity(HASH_CHARS + 1 + name.len());
    b.extend_from_slice(&digits);
    b.extend_from_slice(name);
    let s = String::from_utf8(b).map_err(|e| damaged(col, Type::Blob, e.to_string()))?;
    StorePath::from_owned_base_name(s).map_err(|e| damaged(col, Type::Blob, e.to_string()))
}

/// [`path_of`] for a column read as a value: a key BLOB.
pub(crate) fn path_in(col: usize, v: ValueRef<'_>) -> rusqlite::Result<StorePath> {
    match v {
        ValueRef::Blob(k) => path_of(col, k),
        other => Err(damaged(col, other.data_type(), "a base name that is not a key BLOB")),
    }
}

/// [`path_in`] for a nullable column (the deriver).
pub(crate) fn opt_path_in(col: usize, v: ValueRef<'_>) -> rusqlite::Result<Option<StorePath>> {
    match v {
        ValueRef::Null => Ok(None),
        v => path_in(col, v).map(Some),
    }
}

/// The stored reference list: `ids` ascending, deduplicated, as varints.
pub(crate) fn ref_ids_blob(mut ids: Vec<i64>) -> Vec<u8> {
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len() * 3);
    for id in ids {
        let mut v = id as u64;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out
}

/// The row ids of a stored reference list (column `col`, for the error).
pub(crate) fn ref_ids(col: usize, b: &[u8]) -> rusqlite::Result<Vec<i64>> {
    let mut out = Vec::with_capacity(b.len() / 2);
    let (mut v, mut shift) = (0u64, 0u32);
    for &x in b {
        if shift > 56 {
            return Err(damaged(col, Type::Blob, "a reference id of more than 63 bits"));
        }
        v |= u64::from(x & 0x7f) << shift;
        shift += 7;
        if x & 0x80 == 0 {
            out.push(v as i64);
            (v, shift) = (0, 0);
        }
    }
    if shift != 0 {
        return Err(damaged(col, Type::Blob, "a reference list ending inside an id"));
    }
    Ok(out)
}

/// The stored form of a content address: compact when its digest is a
/// nix-base32 sha256 that reads back to the same text, else the text.
pub(crate) fn ca_value(ca: &str) -> Value {
    let compact = ca
        .len()
        .checked_sub(SHA256_CHARS)
        .filter(|&at| ca.is_char_boundary(at) && ca[..at].ends_with("sha256:"))
        .and_then(|at| Some((at, nix32_decode::<SHA256_BYTES>(&ca[at..])?)));
    match compact {
        Some((at, digest)) if nix32_encode(&digest) == ca[at..] => {
            let mut b = ca.as_bytes()[..at].to_vec();
            b.extend_from_slice(&digest);
            Value::Blob(b)
        }
        _ => Value::Text(ca.to_owned()),
    }
}

/// The content address a `ca` column holds (column `col`, for the error).
pub(crate) fn ca_in(col: usize, v: ValueRef<'_>) -> rusqlite::Result<Option<String>> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => Ok(Some(
            std::str::from_utf8(t)
                .map_err(|e| damaged(col, Type::Text, e.to_string()))?
                .to_owned(),
        )),
        ValueRef::Blob(b) if b.len() > SHA256_BYTES => {
            let (head, digest) = b.split_at(b.len() - SHA256_BYTES);
            let mut s = std::str::from_utf8(head)
                .map_err(|e| damaged(col, Type::Blob, e.to_string()))?
                .to_owned();
            s.push_str(&nix32_encode(digest));
            Ok(Some(s))
        }
        other => Err(damaged(col, other.data_type(), "a content address of an unknown form")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    #[test]
    fn keys_round_trip_and_keep_hash_parts_apart() {
        for s in [
            format!("{}-a", "0".repeat(32)),
            format!("{}-hello-2.12.drv", "z".repeat(32)),
            "7rjj86a15146cq1b7nbwmkrkldsbzjis-bench-1".to_owned(),
        ] {
            let k = key(&p(&s));
            assert_eq!(k.len(), 20 + s.len() - 33, "{s}");
            assert_eq!(path_of(0, &k).unwrap().base_name(), s);
            let (lo, hi) = hash_part_range(&s[..32]).unwrap();
            assert!(lo <= k && k < hi, "{s}");
        }
        let (lo, hi) = hash_part_range(&"1".repeat(32)).unwrap();
        assert!(!(lo <= key(&p(&format!("{}-a", "0".repeat(32)))) && key(&p(&format!("{}-a", "0".repeat(32)))) < hi));
        assert!(hash_part_range("not-a-hash").is_none());
    }

    /// `path_of`'s own encoding of the hash part is nix-base32 as
    /// `nix32_encode` writes it, for any 20 bytes.
    #[test]
    fn hash_parts_decode_as_nix32_encode_writes_them() {
        let mut rng = fastrand::Rng::with_seed(20);
        for _ in 0..2000 {
            let mut k: Vec<u8> = (0..HASH_BYTES).map(|_| rng.u8(..)).collect();
            k.extend_from_slice(b"x-1");
            let want = format!("{}-x-1", nix32_encode(&k[..HASH_BYTES]));
            assert_eq!(path_of(0, &k).unwrap().base_name(), want);
        }
    }

    #[test]
    fn damaged_keys_are_errors() {
        assert!(path_of(0, &[1; 20]).is_err());
        let mut k = key(&p(&format!("{}-a", "0".repeat(32))));
        k.push(0xff);
        assert!(path_of(0, &k).is_err());
        k.pop();
        k.push(b'/');
        assert!(path_of(0, &k).is_err());
        assert!(path_in(0, ValueRef::Text(b"x")).is_err());
    }

    #[test]
    fn reference_ids_round_trip() {
        let ids = vec![300, 1, 1 << 40, 127, 128, 1];
        let b = ref_ids_blob(ids);
        assert_eq!(ref_ids(0, &b).unwrap(), vec![1, 127, 128, 300, 1 << 40]);
        assert_eq!(ref_ids(0, &[]).unwrap(), Vec::<i64>::new());
        assert!(ref_ids(0, &[0x80]).is_err());
        assert!(ref_ids(0, &[0xff; 11]).is_err());
    }

    #[test]
    fn content_addresses_read_back_as_written() {
        let digest = nix32_encode(&[7; 32]);
        for ca in [
            format!("text:sha256:{digest}"),
            format!("fixed:r:sha256:{digest}"),
            format!("fixed:sha1:{}", nix32_encode(&[7; 20])),
            "fixed:r:sha256:short".to_owned(),
            // 52 characters that decode to more than 256 bits.
            format!("fixed:r:sha256:{}", "z".repeat(52)),
        ] {
            let v = ca_value(&ca);
            let stored = ValueRef::from(&v);
            assert_eq!(ca_in(0, stored).unwrap().as_deref(), Some(ca.as_str()));
        }
        assert!(matches!(ca_value(&format!("text:sha256:{digest}")), Value::Blob(b) if b.len() == 12 + 32));
        assert_eq!(ca_in(0, ValueRef::Null).unwrap(), None);
        assert!(ca_in(0, ValueRef::Blob(&[1; 5])).is_err());
    }
}
