//! An index that ships inside a lower image: built once while the image is
//! still writable (`build-index`), then opened read-only by `serve` straight
//! from the mounted image, with no state dir and no import.
//!
//! Location (a convention): `<lower dir>/.snix-lower-store/index`. Nix never
//! reads dot-names in a store directory (as it ignores `.links`), and the
//! overlay shows the file to nobody who asks Nix about paths.
//!
//! Invariants:
//! - The file is self-contained: rollback journal (`journal_mode=DELETE`),
//!   vacuumed, no `-wal`/`-shm` beside it, written to a temporary directory
//!   next to it and renamed into place, so it is there complete or not at all.
//! - `serve` opens it with SQLite's `immutable=1` (read-only, no locks, no
//!   journal, no `-wal`/`-shm` created): nothing in the image is written.
//! - Its `meta` table says what lower dir it describes: `image_lower_entries`
//!   (store-path-shaped names in the lower dir at build time, which may exceed
//!   the indexed paths), `image_path_count` (indexed paths) and
//!   `image_names_digest` (sha256 over `base name SP nar size LF` of every
//!   indexed path, sorted by base name).
//!
//! Mismatch check at start (an index of image A inside image B): one readdir
//! of the lower dir counting store-path-shaped names, compared with
//! `image_lower_entries`, then 256 indexed paths spread evenly over the id
//! range (ids follow base names) must exist in the lower dir. This costs one
//! readdir without sorting or hashing names, plus 256 stats and 256 primary
//! key lookups. It catches any other image (another closure differs in count
//! or, with the same count, almost surely in a sampled name); it does not
//! catch one object swapped for another of the same count off the sample,
//! which is what `verify` is for. Recomputing the names digest would need the
//! NAR sizes, which a readdir does not give, so it is kept for `verify` and
//! for tooling that compares images, not for start-up. Measured on this
//! project's build machine (ext4, 1M empty files named like store paths, warm
//! cache): listing the names takes about 0.7 s and sorting them another 0.6 s
//! (Python's os.listdir and list.sort, a rough proxy), so a digest of the
//! sorted names would spend most of the 1 s start-up budget; counting alone
//! is the listing.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use super::{IndexError, PathInfoIndex, INDEX_FILE};
use crate::lower::LowerDir;
use crate::store::hash::NIX32_ALPHABET;
use crate::store::StorePath;

/// Directory inside the lower dir holding the image's index.
pub const IMAGE_INDEX_DIR: &str = ".snix-lower-store";
/// File name of the image's index inside [`IMAGE_INDEX_DIR`].
pub const IMAGE_INDEX_FILE: &str = "index";
/// How many indexed paths are checked for presence at start.
const SAMPLE: i64 = 256;

/// Where an image keeps its own index: `<lower dir>/.snix-lower-store/index`.
pub fn default_location(lower_dir: &Path) -> PathBuf {
    lower_dir.join(IMAGE_INDEX_DIR).join(IMAGE_INDEX_FILE)
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
    sd: &crate::store::StoreDir,
    lower: &LowerDir,
    batch: Vec<super::import::NewPath>,
    realisations: Vec<super::import::NewRealisation>,
    opts: super::import::ImportOptions,
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
    sd: &crate::store::StoreDir,
    lower: &LowerDir,
    batch: Vec<super::import::NewPath>,
    realisations: Vec<super::import::NewRealisation>,
    opts: super::import::ImportOptions,
) -> Result<BuildReport, ImageError> {
    super::import::import_with_realisations(tmp, sd, lower, batch, realisations, opts)?;
    let lower_entries = count_lower_entries(lower.root()).map_err(|source| ImageError::Io {
        what: "listing the lower dir",
        path: lower.root().to_owned(),
        source,
    })?;
    let paths = seal(tmp, lower_entries)?;
    let db = tmp.join(INDEX_FILE);
    std::fs::rename(&db, output).map_err(|source| ImageError::Io {
        what: "moving the index into place at",
        path: output.to_owned(),
        source,
    })?;
    Ok(BuildReport { paths, lower_entries })
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
    let mut st = c.prepare("SELECT base_name, nar_size FROM paths ORDER BY base_name")?;
    let mut rows = st.query([])?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let name: String = r.get(0)?;
        let size: i64 = r.get(1)?;
        h.update(format!("{name} {size}\n").as_bytes());
        n += 1;
    }
    Ok((n, hex(&h.finalize())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Turns the freshly imported `index.sqlite` in `tmp` into a self-contained
/// image index: identity in `meta`, rollback journal, vacuumed. Returns the
/// number of indexed paths.
pub fn seal(tmp: &Path, lower_entries: u64) -> Result<u64, ImageError> {
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
    ] {
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

/// Opens an image index read-only (`immutable=1`) and checks it belongs to
/// `lower` (see the module header).
pub fn open_checked(index: &Path, store_dir: &str, lower: &LowerDir) -> Result<PathInfoIndex, ImageError> {
    // The file exists (the caller checked): no tables means it is no index.
    let idx = PathInfoIndex::open_immutable(index, store_dir).map_err(|e| match e {
        IndexError::Missing(_) => ImageError::NotAnImage(index.to_owned()),
        e => e.into(),
    })?;
    let meta = |k: &'static str| {
        move |c: &Connection| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, String>(0))
                .optional()
        }
    };
    let entries = idx.with_conn(meta("image_lower_entries"))?;
    let Some(entries) = entries.and_then(|e| e.parse::<u64>().ok()) else {
        return Err(ImageError::NotAnImage(index.to_owned()));
    };
    let mismatch = |why: String| ImageError::Mismatch {
        index: index.to_owned(),
        lower: lower.root().to_owned(),
        why,
    };
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
    for p in sample(&idx)? {
        if lower.check_present(&p).is_err() {
            return Err(mismatch(format!(
                "indexed path {} is not in the lower dir",
                p.base_name()
            )));
        }
    }
    Ok(idx)
}

/// Up to [`SAMPLE`] indexed paths spread evenly over the id range.
fn sample(idx: &PathInfoIndex) -> Result<Vec<StorePath>, IndexError> {
    idx.with_conn(|c| {
        let (lo, hi): (Option<i64>, Option<i64>) =
            c.query_row("SELECT min(id), max(id) FROM paths", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(Vec::new());
        };
        let mut st = c.prepare_cached("SELECT id, base_name FROM paths WHERE id >= ?1 ORDER BY id LIMIT 1")?;
        let step = ((hi - lo) / SAMPLE).max(1);
        let mut out = Vec::new();
        let mut at = lo;
        while at <= hi && (out.len() as i64) < SAMPLE {
            let Some((id, name)) = st
                .query_row([at], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()?
            else {
                break;
            };
            out.push(super::parse_stored(name)?);
            at = id.max(at) + step;
        }
        Ok(out)
    })
}
