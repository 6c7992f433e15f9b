//! Converting between snix's `PathInfo` and Nix's path info, losslessly for
//! everything Nix sends on the worker protocol: NAR hash and size, references
//! (digests and names), deriver, signatures (`name:base64` ⇄ name + raw
//! bytes) and content address (Nix's `text:`/`fixed:` strings ⇄ snix's
//! enum). Nix's registration time and `ultimate` have no place in snix's
//! schema: they read back as 0 and false.
//!
//! Deriver names: snix (at 50b41ae7e05b) writes both forms into
//! `StorePath.name`. The proto comment, nar-bridge and snix's builds leave
//! ".drv" out; `snix-store copy` and snix's nix-daemon keep it, and snix's
//! nix-daemon serves the stored name unchanged. So the reader is tolerant
//! ([`deriver_from_snix`]) and the writer's form is a choice
//! ([`DeriverName`], default with ".drv", what snix's nix-daemon needs).

use super::proto::castore::{entry, Entry};
use super::proto::store::{
    nar_info, nar_info::ca::Hash as CaHash, NarInfo, PathInfo as SnixPathInfo, StorePath as SnixStorePath,
};
use snix_lower_store_types::content_address::{ContentAddress, Method};
use snix_lower_store_types::hash::{digest_len, nix32_decode_vec, nix32_encode};
use snix_lower_store_types::path::StorePathError;
use snix_lower_store_types::path_info::{PathInfo, Signature};
use snix_lower_store_types::{NarHash, StorePath};

/// Why a path info cannot cross between snix's schema and Nix's. Content
/// addresses and the field values shown are escaped and bounded ([`shown`]):
/// they may come from a remote service.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Nix's git-hashing content addresses have no snix equivalent. (The
    /// message has always ended in "; ".)
    #[error("content address '{0}' (git hashing) has no equivalent in snix's schema; ")]
    GitHashing(String),
    /// A method and algorithm pair snix's enum does not list.
    #[error("content address '{0}' has no equivalent in snix's schema")]
    NoSnixEquivalent(String),
    #[error("unknown snix CA type {0}")]
    UnknownSnixCaType(i32),
    #[error("snix CA digest has {len} bytes, {algo} has {want}")]
    SnixCaDigestLength {
        len: usize,
        algo: &'static str,
        want: usize,
    },
    #[error("deriver '{0}' does not end in .drv")]
    DeriverNotDrv(StorePath),
    #[error("PathInfo has no root entry")]
    NoRootEntry,
    #[error("PathInfo root entry is empty")]
    EmptyRootEntry,
    #[error("root entry name is not UTF-8")]
    RootNameNotUtf8,
    #[error("{0}")]
    RootName(StorePathError),
    /// The errors below name the path (the root entry's name) first.
    #[error("{name}: PathInfo has no narinfo")]
    NoNarInfo { name: String },
    #[error("{name}: nar_sha256 is not 32 bytes")]
    NarSha256Length { name: String },
    #[error("{name}: {digests} reference digests but {names} reference names")]
    ReferenceCount { name: String, digests: usize, names: usize },
    #[error("{name}: {error}")]
    ReferenceName { name: String, error: StorePathError },
    #[error("{name}: reference name {reference} does not match its digest")]
    ReferenceDigest { name: String, reference: String },
    #[error("{name}: deriver digest is not 20 bytes")]
    DeriverDigestLength { name: String },
    #[error("{name}: deriver: {error}")]
    Deriver { name: String, error: StorePathError },
    #[error("{name}: {error}")]
    ContentAddress { name: String, error: Box<ConvertError> },
}

/// How [`to_snix`] writes a deriver's name into snix's `StorePath.name`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeriverName {
    /// The full name, `x.drv`, as `snix-store copy` stores it: snix's own
    /// nix-daemon then answers `--deriver` right (it passes the name through),
    /// while snix's narinfo renderer (nar-bridge) adds a second ".drv".
    #[default]
    WithDrv,
    /// The name without its last ".drv", as the proto comment, nar-bridge and
    /// snix's builds write it: right for nar-bridge, while snix's nix-daemon
    /// then answers without ".drv".
    WithoutDrv,
}

/// Our deriver as snix's `StorePath`, in the `form` asked for. A deriver
/// not ending in ".drv" cannot be written without it (Nix never records one).
fn deriver_to_snix(d: &StorePath, form: DeriverName) -> Result<SnixStorePath, ConvertError> {
    let name = match form {
        DeriverName::WithDrv => d.name(),
        DeriverName::WithoutDrv => d
            .name()
            .strip_suffix(".drv")
            .ok_or_else(|| ConvertError::DeriverNotDrv(d.clone()))?,
    };
    Ok(SnixStorePath {
        name: name.to_owned(),
        digest: digest_of(d),
    })
}

/// snix's deriver `StorePath` as ours: the tolerant reading of both forms
/// snix writes. The stored name must itself be a valid store path name (as
/// snix checks); then a name ending in ".drv" is kept as it is, and one
/// without gets ".drv" added.
///
/// The one ambiguous case is recursive Nix: a derivation `x.drv.drv` written
/// without its last ".drv" is stored as `x.drv`, the same as a derivation
/// `x.drv` written with it (the digest is the same in both readings). This
/// picks `x.drv`, right for every writer that keeps ".drv" and for all but
/// recursive-Nix derivations of the others; a caller that knows which paths
/// exist settles it with [`recursive_nix_alternative`].
fn deriver_from_snix(d: SnixStorePath, name: &str) -> Result<StorePath, ConvertError> {
    let digest: [u8; 20] = d
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| ConvertError::DeriverDigestLength { name: name.to_owned() })?;
    let deriver_err = |error| ConvertError::Deriver {
        name: name.to_owned(),
        error,
    };
    let stored =
        StorePath::from_owned_base_name(format!("{}-{}", nix32_encode(&digest), d.name)).map_err(deriver_err)?;
    if stored.is_derivation() {
        return Ok(stored);
    }
    StorePath::from_owned_base_name(format!("{stored}.drv")).map_err(deriver_err)
}

/// For a deriver read as `x.drv`, the other reading, `x.drv.drv` (a
/// recursive-Nix derivation whose name was stored without its last ".drv"),
/// if that is a valid store path. The caller prefers it only when it is the
/// one the backend holds.
pub(crate) fn recursive_nix_alternative(d: &StorePath) -> Option<StorePath> {
    if !d.is_derivation() {
        return None;
    }
    StorePath::from_owned_base_name(format!("{d}.drv")).ok()
}

fn digest_of(p: &StorePath) -> Vec<u8> {
    nix32_decode_vec(p.hash_part(), 20).expect("validated store path has a nix32 hash part")
}

/// Nix's content address (`text:sha256:…`, `fixed:r:sha256:…`, `fixed:sha1:…`) as snix's.
pub(crate) fn ca_to_snix(ca: &ContentAddress) -> Result<nar_info::Ca, ConvertError> {
    let ty = match (ca.method, ca.algo) {
        (Method::Git, _) => return Err(ConvertError::GitHashing(ca.render())),
        (Method::Text, "sha256") => CaHash::TextSha256,
        (Method::Nar, "sha256") => CaHash::NarSha256,
        (Method::Nar, "sha1") => CaHash::NarSha1,
        (Method::Nar, "sha512") => CaHash::NarSha512,
        (Method::Nar, "md5") => CaHash::NarMd5,
        (Method::Flat, "sha256") => CaHash::FlatSha256,
        (Method::Flat, "sha1") => CaHash::FlatSha1,
        (Method::Flat, "sha512") => CaHash::FlatSha512,
        (Method::Flat, "md5") => CaHash::FlatMd5,
        _ => return Err(ConvertError::NoSnixEquivalent(ca.render())),
    };
    Ok(nar_info::Ca {
        r#type: ty as i32,
        digest: ca.digest.clone(),
    })
}

/// snix's CA as Nix's content address.
pub(crate) fn ca_from_snix(ca: &nar_info::Ca) -> Result<ContentAddress, ConvertError> {
    let ty = CaHash::try_from(ca.r#type).map_err(|_| ConvertError::UnknownSnixCaType(ca.r#type))?;
    let (method, algo) = match ty {
        CaHash::TextSha256 => (Method::Text, "sha256"),
        CaHash::NarSha256 => (Method::Nar, "sha256"),
        CaHash::NarSha1 => (Method::Nar, "sha1"),
        CaHash::NarSha512 => (Method::Nar, "sha512"),
        CaHash::NarMd5 => (Method::Nar, "md5"),
        CaHash::FlatSha256 => (Method::Flat, "sha256"),
        CaHash::FlatSha1 => (Method::Flat, "sha1"),
        CaHash::FlatSha512 => (Method::Flat, "sha512"),
        CaHash::FlatMd5 => (Method::Flat, "md5"),
    };
    if Some(ca.digest.len()) != digest_len(algo) {
        return Err(ConvertError::SnixCaDigestLength {
            len: ca.digest.len(),
            algo,
            want: digest_len(algo).unwrap_or(0),
        });
    }
    Ok(ContentAddress {
        method,
        algo,
        digest: ca.digest.clone(),
    })
}

/// Our path info, with the castore root `entry`, as snix's PathInfo; the
/// deriver's name in the `deriver_name` form.
pub(crate) fn to_snix(info: &PathInfo, entry: Entry, deriver_name: DeriverName) -> Result<SnixPathInfo, ConvertError> {
    let signatures = info
        .sigs
        .iter()
        .map(|s| nar_info::Signature {
            name: s.name.clone(),
            data: s.bytes.clone(),
        })
        .collect();
    let deriver = info
        .deriver
        .as_ref()
        .map(|d| deriver_to_snix(d, deriver_name))
        .transpose()?;
    Ok(SnixPathInfo {
        entry: Some(entry),
        references: info.references.iter().map(digest_of).collect(),
        narinfo: Some(NarInfo {
            nar_size: info.nar_size,
            nar_sha256: info.nar_hash.0.to_vec(),
            signatures,
            reference_names: info.references.iter().map(|r| r.base_name().to_owned()).collect(),
            deriver,
            ca: info.ca.as_ref().map(ca_to_snix).transpose()?,
        }),
    })
}

fn entry_name(e: &Entry) -> Option<&[u8]> {
    Some(match e.entry.as_ref()? {
        entry::Entry::Directory(d) => &d.name,
        entry::Entry::File(f) => &f.name,
        entry::Entry::Symlink(s) => &s.name,
    })
}

/// snix's PathInfo as ours; every field checked.
pub(crate) fn from_snix(p: SnixPathInfo) -> Result<PathInfo, ConvertError> {
    let entry = p.entry.as_ref().ok_or(ConvertError::NoRootEntry)?;
    let name = entry_name(entry).ok_or(ConvertError::EmptyRootEntry)?;
    let name = std::str::from_utf8(name).map_err(|_| ConvertError::RootNameNotUtf8)?;
    let path = StorePath::from_base_name(name).map_err(ConvertError::RootName)?;
    let named = || name.to_owned();
    let ni = p.narinfo.ok_or_else(|| ConvertError::NoNarInfo { name: named() })?;
    let nar_hash = NarHash(
        ni.nar_sha256
            .as_slice()
            .try_into()
            .map_err(|_| ConvertError::NarSha256Length { name: named() })?,
    );
    if ni.reference_names.len() != p.references.len() {
        return Err(ConvertError::ReferenceCount {
            name: named(),
            digests: p.references.len(),
            names: ni.reference_names.len(),
        });
    }
    let mut references = Vec::with_capacity(ni.reference_names.len());
    for (n, d) in ni.reference_names.iter().zip(&p.references) {
        let r = StorePath::from_base_name(n).map_err(|error| ConvertError::ReferenceName { name: named(), error })?;
        if &digest_of(&r) != d {
            return Err(ConvertError::ReferenceDigest {
                name: named(),
                reference: n.clone(),
            });
        }
        references.push(r);
    }
    references.sort();
    references.dedup();
    let deriver = ni.deriver.map(|d| deriver_from_snix(d, name)).transpose()?;
    let mut sigs: Vec<Signature> = ni
        .signatures
        .into_iter()
        .map(|s| Signature {
            name: s.name,
            bytes: s.data,
        })
        .collect();
    sigs.sort();
    Ok(PathInfo {
        path,
        nar_hash,
        nar_size: ni.nar_size,
        references,
        deriver,
        registration_time: 0,
        ultimate: false,
        sigs,
        ca: ni
            .ca
            .as_ref()
            .map(ca_from_snix)
            .transpose()
            .map_err(|error| ConvertError::ContentAddress {
                name: named(),
                error: Box::new(error),
            })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use snix_lower_store_types::hash::hex_encode;

    fn sp(s: &str) -> StorePath {
        StorePath::from_base_name(s).unwrap()
    }

    /// A PathInfo message built by hand from the field numbers of
    /// pathinfo.proto and castore.proto, decoded and converted.
    #[test]
    fn decodes_hand_built_bytes() {
        let name = b"00bgd045z0d4icpbc2yyz4gx48ak44la-net-tools-1.60";
        let rname = b"0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx-glibc";
        let ref_digest = nix32_decode_vec("0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx", 20).unwrap();
        let drv_digest = nix32_decode_vec("1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm", 20).unwrap();
        // Length-delimited field: tag byte, varint length, body.
        let ld = |tag: u8, body: &[u8]| -> Vec<u8> {
            let mut v = vec![tag];
            let mut n = body.len();
            while n >= 0x80 {
                v.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            v.push(n as u8);
            v.extend_from_slice(body);
            v
        };
        // Entry { file (2) = FileEntry { name (1), digest (2), size (3) = 5 } }
        let mut file = ld(0x0a, name);
        file.extend(ld(0x12, &[7u8; 32]));
        file.extend([0x18, 5]);
        let entry = ld(0x12, &file);
        // NARInfo { nar_size (1) = 200, nar_sha256 (2), signatures (3), reference_names (4), deriver (5), ca (6) }
        let mut ni = vec![0x08, 0xc8, 0x01];
        ni.extend(ld(0x12, &[9u8; 32]));
        let mut sig = ld(0x0a, b"cache.example-1");
        sig.extend(ld(0x12, &[1, 2, 3]));
        ni.extend(ld(0x1a, &sig));
        ni.extend(ld(0x22, rname));
        let mut drv = ld(0x0a, b"net-tools-1.60");
        drv.extend(ld(0x12, &drv_digest));
        ni.extend(ld(0x2a, &drv));
        let mut ca = vec![0x08, 0x04]; // TEXT_SHA256
        ca.extend(ld(0x12, &[3u8; 32]));
        ni.extend(ld(0x32, &ca));
        // PathInfo { entry (1), references (2), narinfo (3) }
        let mut bytes = ld(0x0a, &entry);
        bytes.extend(ld(0x12, &ref_digest));
        bytes.extend(ld(0x1a, &ni));

        let msg = SnixPathInfo::decode(bytes.as_slice()).unwrap();
        let info = from_snix(msg.clone()).unwrap();
        assert_eq!(info.path, sp(std::str::from_utf8(name).unwrap()));
        assert_eq!(info.nar_size, 200);
        assert_eq!(info.nar_hash, NarHash([9; 32]));
        assert_eq!(info.references, vec![sp(std::str::from_utf8(rname).unwrap())]);
        assert_eq!(
            info.deriver,
            Some(sp("1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm-net-tools-1.60.drv"))
        );
        assert_eq!(info.sigs, vec![Signature::parse("cache.example-1:AQID").unwrap()]);
        assert_eq!(
            info.ca.as_ref().map(ContentAddress::render),
            Some(format!("text:sha256:{}", nix32_encode(&[3u8; 32])))
        );
        // And back, in the proto comment's form: the same bytes.
        let again = to_snix(&info, msg.entry.clone().unwrap(), DeriverName::WithoutDrv).unwrap();
        assert_eq!(again.encode_to_vec(), bytes);
        // In the default form the name keeps ".drv", and reads back the same.
        let with = to_snix(&info, msg.entry.clone().unwrap(), DeriverName::default()).unwrap();
        assert_eq!(
            with.narinfo.as_ref().unwrap().deriver.as_ref().unwrap().name,
            "net-tools-1.60.drv"
        );
        assert_eq!(from_snix(with).unwrap(), info);
    }

    const OUT: &str = "00bgd045z0d4icpbc2yyz4gx48ak44la-hello-2.12";
    const DRV_HASH: &str = "1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm";

    fn info_with_deriver(deriver: Option<StorePath>) -> PathInfo {
        PathInfo {
            deriver,
            ..PathInfo::new(sp(OUT), NarHash([0; 32]), 1)
        }
    }

    fn entry_of(name: &str) -> Entry {
        Entry {
            entry: Some(entry::Entry::Symlink(super::super::proto::castore::SymlinkEntry {
                name: name.as_bytes().to_vec(),
                target: b"/".to_vec(),
            })),
        }
    }

    /// snix's PathInfo for [`OUT`] with a deriver stored as `name`.
    fn snix_with_deriver_name(name: &str) -> SnixPathInfo {
        let mut p = to_snix(&info_with_deriver(None), entry_of(OUT), DeriverName::default()).unwrap();
        p.narinfo.as_mut().unwrap().deriver = Some(SnixStorePath {
            name: name.to_owned(),
            digest: nix32_decode_vec(DRV_HASH, 20).unwrap(),
        });
        p
    }

    fn read_deriver(name: &str) -> Result<Option<StorePath>, ConvertError> {
        from_snix(snix_with_deriver_name(name)).map(|i| i.deriver)
    }

    /// Both forms snix writes read as the same deriver: `snix-store copy`'s
    /// (with ".drv") and the proto comment's (without).
    #[test]
    fn deriver_read_with_or_without_drv() {
        let want = Some(sp(&format!("{DRV_HASH}-hello-2.12.drv")));
        assert_eq!(read_deriver("hello-2.12.drv").unwrap(), want);
        assert_eq!(read_deriver("hello-2.12").unwrap(), want);
        // Not `….drv.drv`: the bug a snix-store copy'd backend showed.
        assert!(!read_deriver("hello-2.12.drv")
            .unwrap()
            .unwrap()
            .name()
            .ends_with(".drv.drv"));
    }

    /// Recursive Nix: `x.drv.drv` with ".drv" is kept; without its last
    /// ".drv" it is stored as `x.drv`, read as `x.drv` by the simple rule, and
    /// `recursive_nix_alternative` names the other reading for the client.
    #[test]
    fn recursive_nix_deriver_names() {
        let rec = sp(&format!("{DRV_HASH}-inner.drv.drv"));
        assert_eq!(read_deriver("inner.drv.drv").unwrap(), Some(rec.clone()));
        let simple = read_deriver("inner.drv").unwrap().unwrap();
        assert_eq!(simple, sp(&format!("{DRV_HASH}-inner.drv")));
        assert_eq!(recursive_nix_alternative(&simple), Some(rec.clone()));
        assert_eq!(recursive_nix_alternative(&sp(OUT)), None);
        // Written without ".drv", only the last one goes (as snix's builds do).
        let p = to_snix(
            &info_with_deriver(Some(rec.clone())),
            entry_of(OUT),
            DeriverName::WithoutDrv,
        )
        .unwrap();
        assert_eq!(p.narinfo.unwrap().deriver.unwrap().name, "inner.drv");
        // Written with ".drv", it round-trips exactly.
        let p = to_snix(
            &info_with_deriver(Some(rec.clone())),
            entry_of(OUT),
            DeriverName::WithDrv,
        )
        .unwrap();
        assert_eq!(from_snix(p).unwrap().deriver, Some(rec));
    }

    /// A stored name that is no valid store path name, or one that adding
    /// ".drv" makes too long, is an error naming the path and the deriver.
    #[test]
    fn invalid_deriver_names_are_clear_errors() {
        let e = read_deriver("a/b").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{OUT}: deriver: '{DRV_HASH}-a/b' is not a valid store path: \
                 name contains a character outside [A-Za-z0-9+-._?=]"
            )
        );
        let e = read_deriver("").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{OUT}: deriver: ")) && e.ends_with("too short"),
            "{e}"
        );
        // 211 characters is the limit: kept as is when it ends in ".drv"…
        let long = format!("{}.drv", "x".repeat(207));
        assert_eq!(read_deriver(&long).unwrap().unwrap().name(), long);
        // …and too long once ".drv" is added.
        let e = read_deriver(&"x".repeat(208)).unwrap_err().to_string();
        assert!(e.ends_with("name is longer than 211 characters"), "{e}");
        let mut p = snix_with_deriver_name("hello-2.12.drv");
        p.narinfo.as_mut().unwrap().deriver.as_mut().unwrap().digest.pop();
        assert_eq!(
            from_snix(p).unwrap_err().to_string(),
            format!("{OUT}: deriver digest is not 20 bytes")
        );
    }

    /// The writer's two forms, and what each reads back as.
    #[test]
    fn deriver_written_in_either_form_reads_back_exactly() {
        let d = sp(&format!("{DRV_HASH}-hello-2.12.drv"));
        let info = info_with_deriver(Some(d.clone()));
        for (form, name) in [
            (DeriverName::WithDrv, "hello-2.12.drv"),
            (DeriverName::WithoutDrv, "hello-2.12"),
        ] {
            let p = to_snix(&info, entry_of(OUT), form).unwrap();
            let written = p.narinfo.as_ref().unwrap().deriver.clone().unwrap();
            assert_eq!(written.name, name);
            assert_eq!(written.digest, nix32_decode_vec(DRV_HASH, 20).unwrap());
            assert_eq!(from_snix(p).unwrap(), info);
        }
        assert_eq!(DeriverName::default(), DeriverName::WithDrv);
        // A deriver without ".drv" (Nix never records one) cannot lose it.
        let odd = info_with_deriver(Some(sp(&format!("{DRV_HASH}-hello"))));
        assert_eq!(
            to_snix(&odd, entry_of(OUT), DeriverName::WithoutDrv)
                .unwrap_err()
                .to_string(),
            format!("deriver '{DRV_HASH}-hello' does not end in .drv")
        );
        let p = to_snix(&odd, entry_of(OUT), DeriverName::WithDrv).unwrap();
        assert_eq!(p.narinfo.unwrap().deriver.unwrap().name, "hello");
    }

    #[test]
    fn every_ca_kind_round_trips() {
        for (m, a, n) in [
            ("text:", "sha256", 32),
            ("fixed:r:", "sha1", 20),
            ("fixed:r:", "sha512", 64),
            ("fixed:", "md5", 16),
            ("fixed:", "sha256", 32),
        ] {
            let s = format!("{m}{a}:{}", nix32_encode(&vec![0xab; n]));
            let ca = ContentAddress::parse(&s).unwrap();
            assert_eq!(ca_from_snix(&ca_to_snix(&ca).unwrap()).unwrap().render(), s);
        }
        let git = format!("fixed:git:sha1:{}", nix32_encode(&[0xab; 20]));
        assert_eq!(
            ca_to_snix(&ContentAddress::parse(&git).unwrap())
                .unwrap_err()
                .to_string(),
            format!("content address '{git}' (git hashing) has no equivalent in snix's schema; ")
        );
        // An unknown algorithm never becomes a content address at all.
        let e = ContentAddress::parse("fixed:blake9:abc").unwrap_err();
        assert!(e.contains("unknown hash algorithm 'blake9'"), "{e}");
    }

    /// A base16 digest of the right byte length with a multi-byte character
    /// at any offset is refused (it was sliced by byte pairs and panicked).
    #[test]
    fn ca_digest_with_multibyte_char_is_refused() {
        let hex = hex_encode(&[0xab; 20]);
        let ca = ContentAddress::parse(&format!("fixed:sha1:{hex}")).unwrap();
        assert_eq!(ca_to_snix(&ca).unwrap().digest, vec![0xab; 20]);
        for at in 0..hex.len() - 1 {
            let bad = format!("{}Б{}", &hex[..at], &hex[at + 2..]);
            assert_eq!(bad.len(), hex.len());
            let e = ContentAddress::parse(&format!("fixed:sha1:{bad}")).unwrap_err();
            assert!(e.contains("\\u{411}"), "{e}");
        }
    }

    #[test]
    fn mismatched_reference_digest_is_refused() {
        let info = PathInfo {
            references: vec![sp("0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx-y")],
            ..PathInfo::new(sp("00bgd045z0d4icpbc2yyz4gx48ak44la-x"), NarHash([0; 32]), 1)
        };
        let mut p = to_snix(
            &info,
            Entry {
                entry: Some(entry::Entry::Symlink(Default::default())),
            },
            DeriverName::default(),
        )
        .unwrap();
        p.entry = Some(Entry {
            entry: Some(entry::Entry::Symlink(super::super::proto::castore::SymlinkEntry {
                name: b"00bgd045z0d4icpbc2yyz4gx48ak44la-x".to_vec(),
                target: b"/".to_vec(),
            })),
        });
        p.references[0][0] ^= 1;
        assert!(from_snix(p)
            .unwrap_err()
            .to_string()
            .contains("does not match its digest"));
    }
}
