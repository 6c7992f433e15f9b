//! The settled file: which lower an upper store was last reconciled with,
//! so that a boot or switch with the same lower costs one small read.
//!
//! The file holds comment lines (`#`) and one line `v1 <sha256 hex>`: the
//! SHA-256 of the upper database's path and the lower index's identity:
//! - an image's own index: `image <image id> <path count>` (the id is
//!   unique per image, see `index::image`; the index is immutable);
//! - a state dir index: `state-dir <dev> <inode> <birth time ns> <max row
//!   id>` of its file: `import` only ever inserts rows, so any import moves
//!   `max(id)`, and a new or replaced index file is another inode or birth
//!   time. Cost: one `stat` and one B-tree descent, at any size.
//!
//! Invariant: written (atomically: temporary file, fsync, rename) only
//! after a reconcile succeeded; a missing or unreadable file means "not
//! settled", never an error that stops the reconcile.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

use snix_lower_store_index::PathInfoIndex;

const HEADER: &str = "\
# snix-lower-store reconcile: the lower this upper store was last settled with.
# v1 <sha256 of the upper database path and the lower index identity>; the identity
# is \"image <image id> <path count>\" for an image's own index and
# \"state-dir <dev> <inode> <birth time ns> <max row id>\" for a state dir index.
# Delete this file to force a full reconcile.
";

/// The identity line of the lower index for the upper database `db`.
pub(crate) fn identity(index: &PathInfoIndex, db: &Path) -> Result<String> {
    let meta = |k: &'static str| {
        move |c: &rusqlite::Connection| {
            use rusqlite::OptionalExtension;
            c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, String>(0))
                .optional()
        }
    };
    let id = match index.with_conn(meta("image_id"))? {
        Some(id) => {
            let n = index.with_conn(meta("image_path_count"))?.unwrap_or_default();
            format!("image {id} {n}")
        }
        None => state_dir_identity(index)?,
    };
    let mut h = Sha256::new();
    h.update(db.as_os_str().as_encoded_bytes());
    h.update(b"\n");
    h.update(id.as_bytes());
    Ok(format!(
        "v1 {}",
        snix_lower_store_types::hash::hex_encode(&h.finalize())
    ))
}

fn state_dir_identity(index: &PathInfoIndex) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let file = index.db_path();
    let m = std::fs::metadata(file).with_context(|| format!("stat {}", file.display()))?;
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let max: i64 = index.with_conn(|c| c.query_row("SELECT coalesce(max(id), 0) FROM paths", [], |r| r.get(0)))?;
    Ok(format!("state-dir {} {} {born} {max}", m.dev(), m.ino()))
}

/// Whether `file` records `identity`.
pub(crate) fn matches(file: &Path, identity: &str) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Ok(false);
    };
    Ok(text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        == Some(identity))
}

/// Records `identity` in `file` atomically.
pub(crate) fn write(file: &Path, identity: &str) -> Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(format!("{HEADER}{identity}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("renaming {} to {}", tmp.display(), file.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
