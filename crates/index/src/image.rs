//! An index that ships inside a lower image: built once while the image is
//! still writable (`build-index`), then opened read-only by `serve` straight
//! from the mounted image, with no state dir and no import.
//!
//! Location (a convention, the layout of a Nix store with `root=`): an image
//! root `R` holds the store objects at `R/<store dir>` (`R/nix/store`: the
//! lower dir, the overlay's `lowerdir=`) and the index at
//! `R/.snix-lower-store/index`, outside the store dir. Inside the store dir
//! it would show in the merged store, where Nix's garbage collector fails on
//! any name that is not a store path. The image root of a lower dir is the
//! lower dir with the store dir taken off its end ([`image_root`]); a lower
//! dir that does not end in the store dir (store objects at the top of the
//! mount, as nixpkgs' `make-squashfs.nix` lays them out) has no image root
//! and is served from an imported index, or an index given with `--index`.
//!
//! Invariants:
//! - The file is self-contained: rollback journal (`journal_mode=DELETE`),
//!   vacuumed, no `-wal`/`-shm` beside it, written to a temporary directory
//!   next to it and renamed into place, so it is there complete or not at all.
//! - `serve` opens it with SQLite's `immutable=1` (read-only, no locks, no
//!   journal, no `-wal`/`-shm` created): nothing in the image is written.
//! - Its `meta` table says what lower dir it describes: `image_id` (random,
//!   32 hex digits, also written to `R/.snix-lower-store/id`),
//!   `image_lower_entries` (store-path-shaped names in the lower dir at build
//!   time, which may exceed the indexed paths), `image_path_count` (indexed
//!   paths) and `image_names_digest` (sha256 over `base name SP nar size LF`
//!   of every indexed path, sorted by base name). Without an image root, or
//!   with `--output` elsewhere and an image root that cannot be written, the
//!   index has no `image_id`.
//!
//! Mismatch check at start (an index of image A inside image B), cost
//! independent of the store's size by default ([`ImageCheck::Sample`]):
//! 1. the image root's id file must hold the index's `image_id` (refuses an
//!    index file copied alone into another image, or left from an earlier
//!    build);
//! 2. [`SAMPLE`] indexed paths spread evenly over the id range (ids follow
//!    base names) must exist, and one `lstat` each must fit the recorded NAR
//!    size: a regular file or symlink has exactly the NAR size its length
//!    (and executable bit) gives, a directory at least an empty one's
//!    (refuses a whole `.snix-lower-store` dir copied into another image: its
//!    names are not there, or not with those sizes).
//!
//! [`ImageCheck::Full`] (`serve --image-check full`), and any index without
//! an `image_id` (built before ids), add one readdir of the lower dir counting
//! store-path-shaped names against `image_lower_entries`: about 0.2–0.4 s for
//! 200k names, so it is opt-in. Neither check catches one object swapped for
//! another of the same name and size off the sample; `verify` does. The names
//! digest would need a sorted listing and the NAR sizes, so it is kept for
//! `verify` and tooling that compares images, not for start-up.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use super::{IndexError, PathInfoIndex, INDEX_FILE};
use snix_lower_store_types::hash::NIX32_ALPHABET;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::StorePath;

/// Directory in the image root (beside the store dir) holding the image's index.
pub const IMAGE_INDEX_DIR: &str = ".snix-lower-store";
/// File name of the image's index inside [`IMAGE_INDEX_DIR`].
pub const IMAGE_INDEX_FILE: &str = "index";
/// File name of the image id inside [`IMAGE_INDEX_DIR`].
pub const IMAGE_ID_FILE: &str = "id";
/// How many indexed paths are checked (kind and NAR size) at start.
const SAMPLE: i64 = 1024;
/// The most bytes read from an id file (an id is 32 hex digits and a newline).
const ID_FILE_MAX: u64 = 256;

/// The image root of `lower_dir`: the lower dir with the logical store dir
/// taken off its end, compared component by component (`/srv/img/nix/store`
/// with store dir `/nix/store` gives `/srv/img`; `/nix/store` itself gives
/// `/`). `None` when the lower dir does not end in the store dir.
pub fn image_root(lower_dir: &Path, store_dir: &str) -> Option<PathBuf> {
    use std::path::Component;
    let lower: Vec<Component> = lower_dir.components().filter(|c| *c != Component::CurDir).collect();
    let store: Vec<Component> = Path::new(store_dir)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if store.is_empty() || lower.len() < store.len() || lower[lower.len() - store.len()..] != store[..] {
        return None;
    }
    let root: PathBuf = lower[..lower.len() - store.len()].iter().collect();
    Some(if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    })
}

/// Where an image keeps its own index: `R/.snix-lower-store/index` for the
/// lower dir's image root `R` (see [`image_root`]).
pub fn default_location(lower_dir: &Path, store_dir: &str) -> Option<PathBuf> {
    image_root(lower_dir, store_dir).map(|r| r.join(IMAGE_INDEX_DIR).join(IMAGE_INDEX_FILE))
}

/// Why an image index cannot be built or used. Each message names the index,
/// the lower dir and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image index {index} does not match the lower dir {lower}: {why}; it was built for another image. \
         Rebuild it with `snix-lower-store build-index --lower-dir {lower} …` while the image is writable, \
         or serve this lower dir from a --state-dir after `snix-lower-store import`"
    )]
    Mismatch {
        index: PathBuf,
        lower: PathBuf,
        why: String,
    },
    #[error(
        "{0} is not an image index made by `snix-lower-store build-index` (no image identity in its meta table); \
         rebuild it with build-index, or use it as a --state-dir index"
    )]
    NotAnImage(PathBuf),
    #[error("build-index: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Import(#[from] super::import::ImportError),
}

/// How `build-index` builds: the import's checks, and the image id.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Validation and content-address proofs, as for `import`.
    pub import: super::import::ImportOptions,
    /// The image id to write (32 lowercase hex digits, see [`parse_image_id`]);
    /// `None`: a random one. A build system that must give the same output
    /// for the same input (a Nix derivation) derives it from its inputs.
    pub image_id: Option<String>,
    /// Where the import and the sealing report how far they are.
    pub progress: snix_lower_store_types::progress::Progress,
}

/// Checks an image id given on the command line: exactly 32 hex digits,
/// returned in lowercase.
pub fn parse_image_id(s: &str) -> Result<String, String> {
    if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "image id {:?}: give 32 hex digits (e.g. the first 32 of a sha256sum of the image's registration)",
            s.escape_debug().to_string()
        ))
    }
}

/// What `build-index` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildReport {
    /// Indexed paths.
    pub paths: u64,
    /// Store-path-shaped names in the lower dir.
    pub lower_entries: u64,
}

/// Imports `batch` (validated exactly as `import` does) into a new index
/// beside `output`, seals it and renames it to `output`. The directory of
/// `output` must be writable: an image is indexed before it is frozen.
pub fn build(
    output: &Path,
    sd: &snix_lower_store_types::StoreDir,
    lower: &LowerDir,
    batch: Vec<snix_lower_store_types::path_info::PathInfo>,
    realisations: Vec<super::import::NewRealisation>,
    opts: BuildOptions,
) -> Result<BuildReport, ImageError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Io { what, path, source }
    };
    let parent = output.parent().unwrap_or(Path::new("."));
    const WRITABLE: &str = "cannot write beside the index (an image is indexed while it is writable: \
                            build the index before freezing the image, or give --output)";
    std::fs::create_dir_all(parent).map_err(io(WRITABLE, parent))?;
    let tmp = parent.join(format!(".build-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(io(WRITABLE, &tmp))?;
    let r = build_in(&tmp, output, sd, lower, batch, realisations, opts);
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn build_in(
    tmp: &Path,
    output: &Path,
    sd: &snix_lower_store_types::StoreDir,
    lower: &LowerDir,
    batch: Vec<snix_lower_store_types::path_info::PathInfo>,
    realisations: Vec<super::import::NewRealisation>,
    opts: BuildOptions,
) -> Result<BuildReport, ImageError> {
    let progress = &opts.progress;
    super::import::import_reporting(tmp, sd, lower, batch, realisations, opts.import, progress)?;
    progress.phase("sealing", None);
    let lower_entries = count_lower_entries(lower.root()).map_err(|source| ImageError::Io {
        what: "listing the lower dir",
        path: lower.root().to_owned(),
        source,
    })?;
    let id = write_id(tmp, output, id_location(lower.root(), sd.as_str()), opts.image_id)?;
    let paths = seal(tmp, lower_entries, id.as_deref())?;
    let db = tmp.join(INDEX_FILE);
    std::fs::rename(&db, output).map_err(|source| ImageError::Io {
        what: "moving the index into place at",
        path: output.to_owned(),
        source,
    })?;
    Ok(BuildReport { paths, lower_entries })
}

/// Writes a new image id to `R/.snix-lower-store/id` (beside `tmp`,
/// renamed into place) and returns it. Without an image root, or with
/// `--output` elsewhere and an image root that cannot be written, the index
/// gets no id (a warning says `serve` will list the lower dir at start).
fn write_id(
    tmp: &Path,
    output: &Path,
    target: Option<PathBuf>,
    given: Option<String>,
) -> Result<Option<String>, ImageError> {
    let Some(target) = target else {
        tracing::warn!(
            index = %output.display(),
            "the lower dir does not end in the store dir, so it has no image root for an id file: the index \
             gets no id, and `serve` will list the whole lower dir at start to check it (lay the image out as \
             <root>/nix/store with the index in <root>/.snix-lower-store)"
        );
        return Ok(None);
    };
    let id = match given {
        Some(id) => id,
        None => new_id().map_err(|source| ImageError::Io {
            what: "reading /dev/urandom for the image id of",
            path: target.clone(),
            source,
        })?,
    };
    let write = |dir: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(target.parent().unwrap_or(Path::new(".")))?;
        let staged = dir.join(format!(".id-{}", std::process::id()));
        std::fs::write(&staged, format!("{id}\n"))?;
        std::fs::rename(&staged, &target)
    };
    // Staged in `tmp` when it is in the id's directory (the default
    // location), else in the id's own directory.
    let same_dir = output.parent() == target.parent();
    let staged_in = if same_dir {
        tmp.to_owned()
    } else {
        target.parent().unwrap_or(Path::new(".")).to_owned()
    };
    match write(&staged_in) {
        Ok(()) => Ok(Some(id)),
        Err(source) if same_dir => Err(ImageError::Io {
            what: "writing the image id to",
            path: target,
            source,
        }),
        Err(e) => {
            tracing::warn!(
                id = %target.display(),
                error = %e,
                "cannot write the image id into the image root: the index gets no id, and `serve` will list \
                 the whole lower dir at start to check it"
            );
            Ok(None)
        }
    }
}

/// Whether `name` looks like a store path base name (`<32 nix32 chars>-<name>`).
fn store_path_shaped(name: &[u8]) -> bool {
    name.len() > 33 && name[32] == b'-' && name[..32].iter().all(|c| NIX32_ALPHABET.contains(c))
}

/// Store-path-shaped names in the lower dir (one readdir, nothing sorted).
pub fn count_lower_entries(lower: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut n = 0;
    for ent in std::fs::read_dir(lower)? {
        if store_path_shaped(ent?.file_name().as_bytes()) {
            n += 1;
        }
    }
    Ok(n)
}

/// sha256 over `base name SP nar size LF` of every path, by base name.
fn names_digest(c: &Connection) -> rusqlite::Result<(u64, String)> {
    let mut st = c.prepare("SELECT base_name, nar_size FROM paths")?;
    let rows = st.query_map([], |r| {
        Ok((super::row::path_in(0, r.get_ref(0)?)?, r.get::<_, i64>(1)?))
    })?;
    // Stored keys do not sort as base names do.
    let mut all = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    all.sort_unstable();
    let mut h = Sha256::new();
    for (name, size) in &all {
        h.update(format!("{} {size}\n", name.base_name()).as_bytes());
    }
    Ok((all.len() as u64, hex(&h.finalize())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Turns the freshly imported `index.sqlite` in `tmp` into a self-contained
/// image index: identity in `meta`, rollback journal, vacuumed. Returns the
/// number of indexed paths.
pub fn seal(tmp: &Path, lower_entries: u64, id: Option<&str>) -> Result<u64, ImageError> {
    let db = tmp.join(INDEX_FILE);
    let err = |source| IndexError::Sqlite {
        path: db.clone(),
        source,
    };
    let c = Connection::open(&db).map_err(err)?;
    let (count, digest) = names_digest(&c).map_err(err)?;
    for (k, v) in [
        ("image_lower_entries", lower_entries.to_string()),
        ("image_path_count", count.to_string()),
        ("image_names_digest", digest),
    ]
    .into_iter()
    .chain(id.map(|id| ("image_id", id.to_owned())))
    {
        c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![k, v],
        )
        .map_err(err)?;
    }
    // Leaving WAL mode checkpoints and removes the -wal and -shm files.
    c.pragma_update(None, "journal_mode", "DELETE").map_err(err)?;
    c.execute_batch("VACUUM").map_err(err)?;
    drop(c);
    for side in ["-wal", "-shm", "-journal"] {
        let mut p = db.clone().into_os_string();
        p.push(side);
        if Path::new(&p).exists() {
            return Err(ImageError::Io {
                what: "sealing left a side file beside",
                path: db.clone(),
                source: std::io::Error::other(format!("{} exists", Path::new(&p).display())),
            });
        }
    }
    Ok(count)
}

/// How much of the lower dir `serve` checks against an image index at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageCheck {
    /// The image id, then [`SAMPLE`] indexed paths (kind and NAR size):
    /// cost independent of the store's size.
    #[default]
    Sample,
    /// As `sample`, plus one listing of the whole lower dir whose count of
    /// store-path-shaped names must equal the count at build time.
    Full,
}

/// Opens an image index read-only (`immutable=1`) and checks it belongs to
/// `lower` (see the module header).
pub fn open_checked(
    index: &Path,
    store_dir: &str,
    lower: &LowerDir,
    check: ImageCheck,
) -> Result<PathInfoIndex, ImageError> {
    // The file exists (the caller checked): no tables means it is no index.
    let idx = PathInfoIndex::open_immutable(index, store_dir).map_err(|e| match e {
        IndexError::Missing(_) => ImageError::NotAnImage(index.to_owned()),
        e => e.into(),
    })?;
    let entries = idx.with_conn(meta("image_lower_entries"))?;
    let Some(entries) = entries.and_then(|e| e.parse::<u64>().ok()) else {
        return Err(ImageError::NotAnImage(index.to_owned()));
    };
    let mismatch = |why: String| ImageError::Mismatch {
        index: index.to_owned(),
        lower: lower.root().to_owned(),
        why,
    };
    let list = match idx.with_conn(meta("image_id"))? {
        Some(id) => {
            check_id(&id, lower, store_dir).map_err(mismatch)?;
            check == ImageCheck::Full
        }
        None => {
            tracing::info!(
                index = %index.display(),
                "the image index has no image id (built by an older build-index): checking it by listing \
                 the whole lower dir; rebuild it with build-index for a start-up check that does not list"
            );
            true
        }
    };
    if list {
        let found = count_lower_entries(lower.root()).map_err(|source| ImageError::Io {
            what: "listing the lower dir",
            path: lower.root().to_owned(),
            source,
        })?;
        if found != entries {
            return Err(mismatch(format!(
                "the index was built over {entries} store paths, the lower dir holds {found}"
            )));
        }
    }
    for (p, nar_size) in sample(&idx)? {
        check_object(lower, &p, nar_size).map_err(mismatch)?;
    }
    // Written by `seal` from the same rows; the file cannot change since.
    if let Some(n) = idx.with_conn(meta("image_path_count"))?.and_then(|v| v.parse().ok()) {
        idx.set_fixed_count(n);
    }
    Ok(idx)
}

/// Reads one `meta` value.
fn meta(k: &'static str) -> impl FnOnce(&Connection) -> rusqlite::Result<Option<String>> {
    move |c| {
        c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, String>(0))
            .optional()
    }
}

/// Where the image id of a lower dir lives: next to the default index, in
/// its image root (`None` without one).
pub fn id_location(lower_dir: &Path, store_dir: &str) -> Option<PathBuf> {
    image_root(lower_dir, store_dir).map(|r| r.join(IMAGE_INDEX_DIR).join(IMAGE_ID_FILE))
}

/// A fresh random image id: 32 hex digits from the kernel's random source.
fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex(&b))
}

/// The image root's id file must hold the index's `image_id`. Errors are the
/// reason of a mismatch.
fn check_id(want: &str, lower: &LowerDir, store_dir: &str) -> Result<(), String> {
    use std::io::Read;
    let Some(path) = id_location(lower.root(), store_dir) else {
        return Err(format!(
            "the index has image id {want}, and the lower dir does not end in the store dir {store_dir}, so it \
             has no image root with an id file (an image is laid out as <root>{store_dir} beside \
             <root>/{IMAGE_INDEX_DIR})"
        ));
    };
    let mut buf = Vec::new();
    match std::fs::File::open(&path) {
        // Bounded: an id is 32 hex digits and a newline.
        Ok(f) => f.take(ID_FILE_MAX).read_to_end(&mut buf),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        format!(
            "the index has image id {want}, and the image's {} cannot be read ({e})",
            path.display()
        )
    })?;
    let got = String::from_utf8_lossy(&buf);
    if got.trim_end() != want {
        return Err(format!(
            "the index has image id {want}, the image's {} holds {:?}",
            path.display(),
            got.trim_end()
        ));
    }
    Ok(())
}

/// Up to [`SAMPLE`] indexed paths with their NAR sizes, spread evenly over
/// the id range.
fn sample(idx: &PathInfoIndex) -> Result<Vec<(StorePath, u64)>, IndexError> {
    idx.with_conn(|c| {
        // Two subqueries: SQLite reads a lone min() or max() off the end of
        // the rowid tree, but `min(id), max(id)` together scan every row
        // (what that costs at 1M paths: docs/src/performance.md).
        let (lo, hi): (Option<i64>, Option<i64>) = c.query_row(
            "SELECT (SELECT min(id) FROM paths), (SELECT max(id) FROM paths)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(Vec::new());
        };
        let mut st =
            c.prepare_cached("SELECT id, base_name, nar_size FROM paths WHERE id >= ?1 ORDER BY id LIMIT 1")?;
        let step = ((hi - lo) / SAMPLE).max(1);
        let mut out = Vec::new();
        let mut at = lo;
        while at <= hi && (out.len() as i64) < SAMPLE {
            let Some((id, name, size)) = st
                .query_row([at], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        super::row::path_in(1, r.get_ref(1)?)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()?
            else {
                break;
            };
            out.push((name, u64::try_from(size).unwrap_or(0)));
            at = id.max(at) + step;
        }
        Ok(out)
    })
}

/// The object of `p` exists, and its kind fits its recorded NAR size: a
/// regular file or symlink has exactly the NAR size its length gives, a
/// directory at least an empty directory's. One `lstat`, no reading.
fn check_object(lower: &LowerDir, p: &StorePath, nar_size: u64) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(lower.object(p)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("indexed path {} is not in the lower dir", p.base_name()));
        }
        Err(e) => return Err(format!("indexed path {} cannot be read: {e}", p.base_name())),
    };
    let (kind, fits) = match nar_size_of(&meta) {
        NarSize::Exact(n) => (
            if meta.is_symlink() { "symlink" } else { "regular file" },
            n == nar_size,
        ),
        NarSize::AtLeast(n) => ("directory", nar_size >= n),
    };
    if fits {
        return Ok(());
    }
    Err(format!(
        "indexed path {} has NAR size {nar_size}, which the lower dir's {kind} of {} bytes cannot have",
        p.base_name(),
        meta.len()
    ))
}

/// What an object's metadata says about its NAR size.
#[derive(Debug, PartialEq, Eq)]
enum NarSize {
    Exact(u64),
    AtLeast(u64),
}

/// The NAR size of a regular file or symlink from its length (and the
/// executable bit), the least NAR size of a directory. A NAR string is a
/// u64 length then the bytes padded to 8; the fixed strings around a file's
/// contents or a symlink's target add up to 112 bytes, `executable` and its
/// empty value 32 more, an empty directory is 96.
fn nar_size_of(meta: &std::fs::Metadata) -> NarSize {
    use std::os::unix::fs::PermissionsExt;
    let padded = |n: u64| n.div_ceil(8) * 8;
    if meta.is_dir() {
        NarSize::AtLeast(96)
    } else if meta.is_symlink() {
        NarSize::Exact(112 + padded(meta.len()))
    } else {
        let exec = if meta.permissions().mode() & 0o100 != 0 { 32 } else { 0 };
        NarSize::Exact(112 + exec + padded(meta.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(p: &Path) -> u64 {
        snix_lower_store_types::nar::nar_hash(p).unwrap().1
    }

    #[test]
    fn the_image_root_is_the_lower_dir_without_the_store_dir() {
        let root = |l: &str, sd: &str| image_root(Path::new(l), sd).map(|p| p.display().to_string());
        assert_eq!(root("/srv/img/nix/store", "/nix/store").as_deref(), Some("/srv/img"));
        assert_eq!(root("/srv/img/nix/store/", "/nix/store").as_deref(), Some("/srv/img"));
        assert_eq!(root("/nix/store", "/nix/store").as_deref(), Some("/"));
        assert_eq!(root("img/nix/store", "/nix/store").as_deref(), Some("img"));
        assert_eq!(root("nix/store", "/nix/store").as_deref(), Some("."));
        assert_eq!(root("/srv/img/gnu/store", "/gnu/store").as_deref(), Some("/srv/img"));
        assert_eq!(root("/srv/lower", "/nix/store"), None);
        assert_eq!(root("/srv/img/nix/storex", "/nix/store"), None);
        assert_eq!(root("/srv/img/xnix/store", "/nix/store"), None);
        assert_eq!(root("/store", "/nix/store"), None);
        assert_eq!(
            default_location(Path::new("/m/nix/store"), "/nix/store").as_deref(),
            Some(Path::new("/m/.snix-lower-store/index"))
        );
    }

    #[test]
    fn nar_size_from_metadata_matches_the_nar_writer() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        for n in [0usize, 1, 7, 8, 9, 4096, 4097] {
            for exec in [false, true] {
                let f = t.path().join(format!("f{n}{exec}"));
                std::fs::write(&f, vec![b'a'; n]).unwrap();
                let mode = if exec { 0o755 } else { 0o644 };
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
                let m = std::fs::symlink_metadata(&f).unwrap();
                assert_eq!(nar_size_of(&m), NarSize::Exact(real(&f)), "{n} {exec}");
            }
            let l = t.path().join(format!("l{n}"));
            std::os::unix::fs::symlink("b".repeat(n.clamp(1, 4000)), &l).unwrap();
            let m = std::fs::symlink_metadata(&l).unwrap();
            assert_eq!(nar_size_of(&m), NarSize::Exact(real(&l)), "symlink {n}");
        }
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        assert_eq!(nar_size_of(&std::fs::metadata(&d).unwrap()), NarSize::AtLeast(real(&d)));
        std::fs::write(d.join("x"), b"x").unwrap();
        assert!(real(&d) > 96);
    }
}
