//! Content addresses proven at import: a registration (`nix-store --dump-db`,
//! closureInfo) carries no `ca`, but for a content-addressed path the store
//! path itself is a hash of its content address, so the `ca` can be
//! recovered and checked at once.
//!
//! Invariant: a `ca` is recorded only when recomputing the store path from it
//! (with the entry's own name, references and store directory, as Nix's
//! `makeFixedOutputPathFromCA` does) gives exactly the registered path. A
//! wrong guess therefore never becomes a `ca`: it simply does not match, and
//! the entry stays without one. An entry that already has a `ca` keeps it.
//! The same proof serves path infos from a backend that dropped the `ca`
//! (snix-store's `copy` does): `prove_path`, called per answer by the gRPC
//! client.
//!
//! What is proven, and at what cost:
//! - `fixed:r:sha256` (a `source` path: `nix-store --add`, `builtins.path`,
//!   recursive sha256 fixed outputs): from the NAR hash already in the
//!   registration, no I/O (`CaProofOptions::from_nar_hash`);
//! - `text:sha256` (`builtins.toFile`, `.drv` files) and `fixed:sha256` (flat
//!   sha256 fixed outputs): from the SHA-256 of the file's contents, read from
//!   the lower dir for regular files of at most
//!   `CaProofOptions::max_file_size` bytes (0: no file is read).
//!
//! Not proven (needs the NAR re-hashed with another algorithm, or Git
//! hashing): other algorithms (`fixed:r:sha1`, `fixed:sha512`, …) and
//! `fixed:git:`. Fingerprints follow Nix's store path specification
//! (`<type>:sha256:<base16 inner hash>:<store dir>:<name>`, SHA-256, XOR-folded
//! to 20 bytes, nix-base32); the `ca` is rendered with a nix-base32 digest as
//! Nix renders it.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::content_address::{ContentAddress, Method};
use super::fingerprint::{hash_part, type_with_refs};
use super::hash::hex_encode;
use super::path_info::PathInfo;
use super::{NarHash, StoreDir, StorePath};

/// Default bound on the files read to prove `text:` and flat `fixed:` content
/// addresses: text paths and `.drv` files are small, while flat fixed outputs
/// (source tarballs) can be large and are not worth reading at every import.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 20;

/// Entries below this many are proven on the calling thread.
const PARALLEL_FROM: usize = 4096;

/// Most threads used to prove a batch.
const MAX_THREADS: usize = 8;

/// A NAR of a regular file of `n` bytes is at most this much larger than `n`
/// (header, `type regular`, `executable`, padding); a larger NAR is never a
/// file within the size bound, so it is skipped without a `stat`.
const FILE_NAR_OVERHEAD: u64 = 256;

/// Which content addresses `import` derives for entries that have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaProofOptions {
    /// Prove `fixed:r:sha256` from the NAR hash (no I/O).
    pub from_nar_hash: bool,
    /// Read regular files of at most this many bytes to prove `text:sha256`
    /// and `fixed:sha256`; 0 reads no file.
    pub max_file_size: u64,
}

impl Default for CaProofOptions {
    fn default() -> Self {
        CaProofOptions {
            from_nar_hash: true,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

impl CaProofOptions {
    /// Prove nothing: every entry keeps the `ca` it came with.
    pub const OFF: CaProofOptions = CaProofOptions {
        from_nar_hash: false,
        max_file_size: 0,
    };
}

/// Fill in the `ca` of every entry that has none where its store path proves
/// one, reading file contents (when enabled) from `lower_root`, the physical
/// directory holding the objects. Unreadable or missing objects simply stay
/// without a `ca`: presence and content are the import's checks, not ours.
/// Large batches are split over a few threads (pure hashing and small reads).
pub fn prove_missing_cas(batch: &mut [PathInfo], sd: &StoreDir, lower_root: &Path, opts: CaProofOptions) {
    if opts == CaProofOptions::OFF {
        return;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_THREADS);
    if batch.len() < PARALLEL_FROM || threads < 2 {
        prove_all(batch, sd, lower_root, opts);
        return;
    }
    let chunk = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in batch.chunks_mut(chunk) {
            s.spawn(move || prove_all(part, sd, lower_root, opts));
        }
    });
}

fn prove_all(batch: &mut [PathInfo], sd: &StoreDir, lower_root: &Path, opts: CaProofOptions) {
    let files = if opts.max_file_size > 0 {
        LowerFiles::open(lower_root)
    } else {
        None
    };
    for e in batch.iter_mut().filter(|e| e.ca.is_none()) {
        let claim = Claim {
            path: &e.path,
            references: &e.references,
            nar_hash: &e.nar_hash,
            nar_size: e.nar_size,
        };
        e.ca = prove_one(&claim, sd, files.as_ref(), opts).into_ca();
    }
}

/// What one proof found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The store path is the one this `ca` makes.
    Proved(ContentAddress),
    /// A definite no under these options: nothing the path info or its
    /// object holds (NAR hash; a regular file's contents within the size
    /// bound, or an object that is not such a file) proves a `ca`. Asking
    /// again gives the same answer for the same NAR hash.
    Disproved,
    /// Undecided: reading the lower dir or the object failed (missing, an
    /// I/O error); asking again later may prove it.
    Unknown,
}

impl Proof {
    /// The proven `ca`, if any.
    pub fn into_ca(self) -> Option<ContentAddress> {
        match self {
            Proof::Proved(ca) => Some(ca),
            Proof::Disproved | Proof::Unknown => None,
        }
    }

    /// Whether the answer holds for as long as the NAR hash does (so it may
    /// be remembered): proved or disproved, not undecided.
    pub fn is_definite(&self) -> bool {
        !matches!(self, Proof::Unknown)
    }
}

/// What a path info says about one store path, as far as a proof needs it.
pub struct Claim<'a> {
    pub path: &'a StorePath,
    pub references: &'a [StorePath],
    pub nar_hash: &'a NarHash,
    pub nar_size: u64,
}

impl Claim<'_> {
    /// Whether proving it may read its file (a regular file small enough).
    pub fn needs_file(&self, opts: CaProofOptions) -> bool {
        opts.max_file_size > 0 && self.nar_size <= opts.max_file_size.saturating_add(FILE_NAR_OVERHEAD)
    }
}

/// The `ca` proven from the NAR hash alone (no I/O), if enabled and proven.
pub fn prove_from_nar_hash(claim: &Claim<'_>, sd: &StoreDir, opts: CaProofOptions) -> Option<ContentAddress> {
    if !opts.from_nar_hash {
        return None;
    }
    source_ca(sd, claim.path, claim.references, claim.nar_hash)
}

/// The `ca` of one path info that came without one (a backend's, not an
/// import's): as at import, from the NAR hash, then from the file's contents
/// read from `lower_root`; [`Proof::Unknown`] when that read fails. Blocking
/// (it may read a file of up to `opts.max_file_size` bytes): call it off the
/// async threads.
pub fn prove_path(claim: &Claim<'_>, sd: &StoreDir, lower_root: &Path, opts: CaProofOptions) -> Proof {
    let files = if claim.needs_file(opts) {
        LowerFiles::open(lower_root)
    } else {
        None
    };
    prove_one(claim, sd, files.as_ref(), opts)
}

/// The proof for one entry: first from its NAR hash, then from its file's
/// contents (`files`: the lower dir, `None` if it could not be opened).
fn prove_one(claim: &Claim<'_>, sd: &StoreDir, files: Option<&LowerFiles>, opts: CaProofOptions) -> Proof {
    if let Some(ca) = prove_from_nar_hash(claim, sd, opts) {
        return Proof::Proved(ca);
    }
    if !claim.needs_file(opts) {
        return Proof::Disproved;
    }
    let Some(files) = files else {
        return Proof::Unknown;
    };
    match files.sha256_of_regular_file(claim.path.base_name(), opts.max_file_size) {
        Err(_) => Proof::Unknown,
        Ok(None) => Proof::Disproved,
        Ok(Some(digest)) => text_ca(sd, claim.path, claim.references, &digest)
            .or_else(|| flat_ca(sd, claim.path, claim.references, &digest))
            .map_or(Proof::Disproved, Proof::Proved),
    }
}

/// `fixed:r:sha256:<nix32>` if `path` is the `source` path of a NAR with
/// hash `nar` and these references.
///
/// Never for a path that refers to itself: Nix computes such a path's
/// content address over the NAR with its own hash part blanked out (a hash
/// modulo the self-reference, as a content-addressed derivation's output
/// gets it), so the `ca` digest is not the NAR hash, and no store path that
/// contains itself hashes to its own name. The Nix 2.26 vector `…-selfish`
/// in `tests/data/ca-check-vectors.json` shows it: NAR hash and `ca` digest
/// differ. Such a path is neither proven here nor guessed; a `ca` supplied
/// with it is checked by `content_address::check_claimed`, `:self` included.
pub(crate) fn source_ca(sd: &StoreDir, path: &StorePath, refs: &[StorePath], nar: &NarHash) -> Option<ContentAddress> {
    let ty = type_with_refs("source", sd, path, refs, false)?;
    (hash_part(sd, &ty, &nar.0, path.name()) == path.hash_part()).then(|| sha256_ca(Method::Nar, &nar.0))
}

/// `text:sha256:<nix32>` if `path` is the text path of contents hashing to
/// `digest` with these references (a text path cannot refer to itself).
pub(crate) fn text_ca(
    sd: &StoreDir,
    path: &StorePath,
    refs: &[StorePath],
    digest: &[u8; 32],
) -> Option<ContentAddress> {
    let ty = type_with_refs("text", sd, path, refs, false)?;
    (hash_part(sd, &ty, digest, path.name()) == path.hash_part()).then(|| sha256_ca(Method::Text, digest))
}

/// `fixed:sha256:<nix32>` if `path` is the flat sha256 fixed output of a file
/// hashing to `digest` (such a path has no references).
pub(crate) fn flat_ca(
    sd: &StoreDir,
    path: &StorePath,
    refs: &[StorePath],
    digest: &[u8; 32],
) -> Option<ContentAddress> {
    if !refs.is_empty() {
        return None;
    }
    let inner: [u8; 32] = Sha256::digest(format!("fixed:out:sha256:{}:", hex_encode(digest))).into();
    (hash_part(sd, "output:out", &inner, path.name()) == path.hash_part()).then(|| sha256_ca(Method::Flat, digest))
}

fn sha256_ca(method: Method, digest: &[u8; 32]) -> ContentAddress {
    ContentAddress {
        method,
        algo: "sha256",
        digest: digest.to_vec(),
    }
}

/// The lower dir opened once, so each object is opened relative to it (one
/// path component to resolve, not the whole root path again).
struct LowerFiles(std::fs::File);

impl LowerFiles {
    fn open(root: &Path) -> Option<Self> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(root)
            .ok()
            .map(LowerFiles)
    }

    /// SHA-256 of the object `base` if it is a regular file (not followed
    /// through a symlink; a FIFO never blocks) of at most `max` bytes;
    /// `Ok(None)` for any other object (a symlink, directory, FIFO, socket,
    /// a longer file), `Err` when opening or reading fails otherwise (a
    /// missing object, an I/O error: it may be readable later). Reads in a
    /// fixed buffer, so memory does not grow with `max`; a file longer than
    /// `max` overruns it and is skipped.
    fn sha256_of_regular_file(&self, base: &str, max: u64) -> std::io::Result<Option<[u8; 32]>> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        // A validated base name has no NUL and no '/'.
        let f = match rustix::fs::openat(&self.0, base, flags, Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd),
            // A symlink (O_NOFOLLOW) or a socket: never a regular file.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // Only a regular file is a text or flat object (a FIFO or device
        // opened here must not be hashed as one).
        if !f.metadata()?.is_file() {
            return Ok(None);
        }
        let mut h = Sha256::new();
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0u64;
        let mut r = f.take(max + 1);
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    h.update(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((total <= max).then(|| h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::nix32_encode;
    use serde_json::Value;

    /// Vectors made by real Nix 2.26 and 2.34 (see the file's `note`).
    const VECTORS: &str = include_str!("../tests/data/ca-proof-vectors.json");

    struct Vector {
        path: StorePath,
        kind: String,
        nar_hash: NarHash,
        refs: Vec<StorePath>,
        nix_ca: String,
        file: Option<Vec<u8>>,
    }

    fn vectors() -> (StoreDir, Vec<Vector>) {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let sd = StoreDir::new(doc["storeDir"].as_str().unwrap()).unwrap();
        let out = doc["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Vector {
                path: sd.parse(e["path"].as_str().unwrap()).unwrap(),
                kind: e["kind"].as_str().unwrap().to_owned(),
                nar_hash: NarHash::parse(e["narHash"].as_str().unwrap()).unwrap(),
                refs: e["references"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| sd.parse(r.as_str().unwrap()).unwrap())
                    .collect(),
                nix_ca: e["nix_ca"].as_str().unwrap().to_owned(),
                file: e.get("file").and_then(Value::as_str).map(|s| s.as_bytes().to_vec()),
            })
            .collect();
        (sd, out)
    }

    /// What the pure functions prove for `v` with a possibly changed
    /// path, references, NAR hash and file digest.
    fn proven(sd: &StoreDir, path: &StorePath, refs: &[StorePath], nar: &NarHash, file: Option<&[u8]>) -> Vec<String> {
        let mut out: Vec<String> = source_ca(sd, path, refs, nar)
            .iter()
            .map(ContentAddress::render)
            .collect();
        if let Some(bytes) = file {
            let d: [u8; 32] = Sha256::digest(bytes).into();
            out.extend(text_ca(sd, path, refs, &d).map(|c| c.render()));
            out.extend(flat_ca(sd, path, refs, &d).map(|c| c.render()));
        }
        out
    }

    #[test]
    fn each_provable_vector_gets_exactly_nix_ca() {
        let (sd, vs) = vectors();
        assert_eq!(vs.iter().filter(|v| v.kind != "unprovable").count(), 7);
        for v in &vs {
            let got = proven(&sd, &v.path, &v.refs, &v.nar_hash, v.file.as_deref());
            if v.kind == "unprovable" {
                assert_eq!(got, Vec::<String>::new(), "{}", v.path);
            } else {
                assert_eq!(got, vec![v.nix_ca.clone()], "{} ({})", v.path, v.kind);
                let prefix = match v.kind.as_str() {
                    "text" => "text:sha256:",
                    "source" => "fixed:r:sha256:",
                    _ => "fixed:sha256:",
                };
                assert!(v.nix_ca.starts_with(prefix), "{}", v.nix_ca);
            }
        }
    }

    #[test]
    fn tampered_name_reference_or_hash_proves_nothing() {
        let (sd, vs) = vectors();
        for v in vs.iter().filter(|v| v.kind != "unprovable") {
            // Another name with the same hash part.
            let renamed = StorePath::from_base_name(&format!("{}-renamed", v.path.hash_part())).unwrap();
            assert!(proven(&sd, &renamed, &v.refs, &v.nar_hash, v.file.as_deref()).is_empty());
            // One reference more, or one fewer.
            let mut more = v.refs.clone();
            more.push(vs[0].path.clone());
            if more != v.refs && !v.refs.contains(&vs[0].path) {
                assert!(proven(&sd, &v.path, &more, &v.nar_hash, v.file.as_deref()).is_empty());
            }
            if !v.refs.is_empty() {
                assert!(proven(&sd, &v.path, &[], &v.nar_hash, v.file.as_deref()).is_empty());
            }
            // A different NAR hash and different contents.
            let mut nar = v.nar_hash;
            nar.0[0] ^= 1;
            let mut file = v.file.clone();
            if let Some(f) = file.as_mut() {
                f.push(b' ');
            }
            assert!(proven(&sd, &v.path, &v.refs, &nar, file.as_deref()).is_empty());
            // Another store directory.
            let other = StoreDir::new("/gnu/store").unwrap();
            assert!(proven(&other, &v.path, &v.refs, &v.nar_hash, v.file.as_deref()).is_empty());
        }
    }

    #[test]
    fn duplicate_references_count_once_and_order_does_not_matter() {
        let (sd, vs) = vectors();
        let v = vs.iter().find(|v| !v.refs.is_empty() && v.kind == "text").unwrap();
        let d: [u8; 32] = Sha256::digest(v.file.as_deref().unwrap()).into();
        let twice = [v.refs.clone(), v.refs.clone()].concat();
        assert_eq!(
            text_ca(&sd, &v.path, &twice, &d).map(|c| c.render()),
            Some(v.nix_ca.clone())
        );
        // A text path listing itself is never a text path.
        let with_self = [v.refs.clone(), vec![v.path.clone()]].concat();
        assert_eq!(text_ca(&sd, &v.path, &with_self, &d), None);
    }

    /// A real self-referencing path (a content-addressed derivation output
    /// made by Nix 2.26) is not proven from its NAR hash, which is not its
    /// `ca` digest; the `ca` Nix recorded checks as a claim.
    #[test]
    fn self_referencing_path_is_never_proven_from_its_nar_hash() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let doc = include_str!("../tests/data/ca-check-vectors.json");
        let all = crate::path_info_json::parse(doc, &sd).unwrap();
        let selfish: Vec<_> = all.iter().filter(|e| e.references.contains(&e.path)).collect();
        assert_eq!(selfish.len(), 1);
        let e = selfish[0];
        let ca = &e.ca.as_ref().unwrap().render();
        assert!(ca.starts_with("fixed:r:sha256:"), "{ca}");
        assert_ne!(ca, &format!("fixed:r:sha256:{}", nix32_encode(&e.nar_hash.0)));
        assert_eq!(source_ca(&sd, &e.path, &e.references, &e.nar_hash), None);
        let claim = Claim {
            path: &e.path,
            references: &e.references,
            nar_hash: &e.nar_hash,
            nar_size: e.nar_size,
        };
        // Its object as the builder wrote it (`echo "$out refers to ..."`):
        // no file proof either.
        let dir = tempfile::tempdir().unwrap();
        let with_ref = e.references.iter().find(|r| **r != e.path).unwrap();
        let contents = format!("{} refers to {}\n", sd.display(&e.path), sd.display(with_ref));
        assert_eq!(
            contents.len().next_multiple_of(8) as u64 + 112,
            e.nar_size,
            "not the object Nix hashed"
        );
        std::fs::write(dir.path().join(e.path.base_name()), contents).unwrap();
        assert_eq!(
            prove_path(&claim, &sd, dir.path(), CaProofOptions::default()),
            Proof::Disproved
        );
        assert_eq!(
            crate::content_address::ContentAddress::parse(ca)
                .unwrap()
                .check(&sd, &e.path, &e.references),
            Ok(())
        );
    }

    /// A failed read is undecided, not a disproof: the same object proves
    /// once it can be read; an object that is no regular file is a definite no.
    #[test]
    fn a_read_that_fails_is_unknown_and_proves_once_readable() {
        let (sd, vs) = vectors();
        let text = vs.iter().find(|v| v.kind == "text").unwrap();
        let claim = Claim {
            path: &text.path,
            references: &text.refs,
            nar_hash: &text.nar_hash,
            nar_size: 128,
        };
        let dir = tempfile::tempdir().unwrap();
        let opts = CaProofOptions::default();
        let gone = dir.path().join("not-there");
        assert_eq!(prove_path(&claim, &sd, &gone, opts), Proof::Unknown, "no lower dir");
        assert_eq!(prove_path(&claim, &sd, dir.path(), opts), Proof::Unknown, "no object");
        let obj = dir.path().join(text.path.base_name());
        std::fs::create_dir(&obj).unwrap();
        assert_eq!(prove_path(&claim, &sd, dir.path(), opts), Proof::Disproved, "directory");
        std::fs::remove_dir(&obj).unwrap();
        std::os::unix::fs::symlink("/dev/null", &obj).unwrap();
        assert_eq!(prove_path(&claim, &sd, dir.path(), opts), Proof::Disproved, "symlink");
        std::fs::remove_file(&obj).unwrap();
        std::fs::write(&obj, text.file.as_ref().unwrap()).unwrap();
        assert_eq!(
            prove_path(&claim, &sd, dir.path(), opts),
            Proof::Proved(ContentAddress::parse(&text.nix_ca).unwrap())
        );
        // Past the size bound: a definite no.
        let tight = CaProofOptions {
            max_file_size: 1,
            ..opts
        };
        let big = Claim {
            nar_size: 1 << 20,
            ..claim
        };
        assert_eq!(prove_path(&big, &sd, dir.path(), tight), Proof::Disproved);
    }

    fn text_hash_part(sd: &StoreDir, contents: &[u8], name: &str) -> String {
        hash_part(sd, "text", &Sha256::digest(contents).into(), name)
    }

    fn entry(v: &Vector, ca: Option<&str>) -> PathInfo {
        PathInfo {
            references: v.refs.clone(),
            ca: ca.map(|c| ContentAddress::parse(c).unwrap()),
            ..PathInfo::new(v.path.clone(), v.nar_hash, 128)
        }
    }

    #[test]
    fn batch_reads_files_within_the_bound_and_keeps_existing_cas() {
        let (sd, vs) = vectors();
        let dir = tempfile::tempdir().unwrap();
        for v in &vs {
            if let Some(f) = &v.file {
                std::fs::write(dir.path().join(v.path.base_name()), f).unwrap();
            }
        }
        let text = vs.iter().find(|v| v.kind == "text").unwrap();
        let flat = vs.iter().find(|v| v.kind == "flat").unwrap();
        let source = vs.iter().find(|v| v.kind == "source").unwrap();
        // Any valid `ca` an entry already has is kept, even a wrong one.
        let kept = format!("fixed:r:sha256:{}", nix32_encode(&[7; 32]));
        let mut batch = vec![
            entry(text, None),
            entry(flat, None),
            entry(source, None),
            entry(text, Some(&kept)),
        ];
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        let cas: Vec<Option<String>> = batch
            .iter()
            .map(|e| e.ca.as_ref().map(ContentAddress::render))
            .collect();
        assert_eq!(
            cas,
            [
                Some(text.nix_ca.clone()),
                Some(flat.nix_ca.clone()),
                Some(source.nix_ca.clone()),
                Some(kept)
            ]
        );
        // No file reading: only the NAR-hash proof.
        let mut batch = vec![entry(text, None), entry(source, None)];
        let nar_only = CaProofOptions {
            from_nar_hash: true,
            max_file_size: 0,
        };
        prove_missing_cas(&mut batch, &sd, dir.path(), nar_only);
        assert_eq!(batch[0].ca, None);
        assert_eq!(
            batch[1].ca.as_ref().map(ContentAddress::render),
            Some(source.nix_ca.clone())
        );
        // A file over the bound is not read.
        let mut batch = vec![entry(text, None)];
        let len = text.file.as_ref().unwrap().len() as u64;
        let tight = CaProofOptions {
            from_nar_hash: true,
            max_file_size: len - 1,
        };
        prove_missing_cas(&mut batch, &sd, dir.path(), tight);
        assert_eq!(batch[0].ca, None);
        // Off: nothing at all.
        let mut batch = vec![entry(source, None)];
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::OFF);
        assert_eq!(batch[0].ca, None);
    }

    #[test]
    fn symlinks_directories_and_missing_objects_are_not_read() {
        let (sd, vs) = vectors();
        let text = vs.iter().find(|v| v.kind == "text").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("elsewhere");
        std::fs::write(&real, text.file.as_ref().unwrap()).unwrap();
        let mut batch = vec![entry(text, None)];
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        assert_eq!(batch[0].ca, None, "missing");
        std::os::unix::fs::symlink(&real, dir.path().join(text.path.base_name())).unwrap();
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        assert_eq!(batch[0].ca, None, "symlink");
        std::fs::remove_file(dir.path().join(text.path.base_name())).unwrap();
        std::fs::create_dir(dir.path().join(text.path.base_name())).unwrap();
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        assert_eq!(batch[0].ca, None, "directory");
        // A FIFO: opened without blocking, never hashed (its empty read
        // would otherwise be taken for empty contents).
        let empty = StorePath::from_base_name(&format!("{}-fifo", text_hash_part(&sd, b"", "fifo"))).unwrap();
        let fifo = dir.path().join(empty.base_name());
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        let mut batch = vec![PathInfo {
            path: empty.clone(),
            references: Vec::new(),
            ..entry(text, None)
        }];
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        assert_eq!(batch[0].ca, None, "fifo");
        // The same name as a regular empty file is proven.
        std::fs::remove_file(dir.path().join(empty.base_name())).unwrap();
        std::fs::write(dir.path().join(empty.base_name()), b"").unwrap();
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        assert!(
            batch[0].ca.as_ref().unwrap().render().starts_with("text:sha256:"),
            "{:?}",
            batch[0].ca
        );
    }

    #[test]
    fn large_batches_are_proven_on_threads_with_the_same_result() {
        let sd = StoreDir::new("/nix/store").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = PARALLEL_FROM * 2 + 3;
        let mut batch: Vec<PathInfo> = (0..n)
            .map(|i| {
                let nar = NarHash(Sha256::digest(i.to_le_bytes()).into());
                let name = format!("p{i}");
                let hp = hash_part(&sd, "source", &nar.0, &name);
                PathInfo {
                    ..PathInfo::new(
                        StorePath::from_base_name(&format!("{hp}-{name}")).unwrap(),
                        nar,
                        1 << 30,
                    )
                }
            })
            .collect();
        prove_missing_cas(&mut batch, &sd, dir.path(), CaProofOptions::default());
        for e in &batch {
            assert_eq!(
                e.ca.as_ref().map(ContentAddress::render),
                Some(format!("fixed:r:sha256:{}", nix32_encode(&e.nar_hash.0)))
            );
        }
    }
}
