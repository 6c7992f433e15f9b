//! `PathInfoIndex`: the embedded path-info database (SQLite, WAL mode).
//!
//! Tables: `paths` (one row per valid path: NAR hash and size, deriver,
//! signatures, CA, registration time, and its references as the row ids of
//! the referenced paths, so QueryPathInfo is one row read and one rowid
//! descent per reference), `refs` (the same pairs keyed by the referenced
//! path, for QueryReferrers), `drv_outputs` (derivation → output name
//! → output path, read from the `.drv` in the lower dir at import; the
//! reverse index answers QueryValidDerivers), `realisations` (content-
//! addressed derivation output id → output path, signatures, dependent
//! realisations, and the derivation that output path names as its deriver,
//! which fills the floating outputs of the output map). Hash-part lookups
//! use the unique index on `base_name` as a range scan. Each fact is
//! stored once and compact (base names as 20 hash bytes and the name, see
//! [`row`] for every stored form), so the index is about half of Nix's own
//! `db.sqlite` for the same paths (bench/results/2026-12-08-index-schema.md).
//!
//! Under `serve` ([`PathInfoIndex::start_key_directory`]) point lookups by
//! base name go through an in-memory key directory ([`keys`]) that names the
//! row id without descending the `base_name` B-tree; it describes one
//! snapshot, and a reader on another answers from SQLite. QueryPathInfo and
//! QueryReferrers compare the named row's base name with the one asked for
//! and ask the `base_name` index on a difference, so they are exact; what
//! IsValidPath and QueryValidPaths rely on is argued in [`keys`].
//!
//! Schema versions: 3 added `realisations`; 4 stores each fact once (the
//! forms of [`row`]). An index of an older version is refused at open with
//! an error naming the command that rebuilds it (`import` into a new state
//! dir, `build-index` for an image's): every row changes form, so a
//! migration would cost what a rebuild costs.
//!
//! Readers take a pooled read-only connection per query. Each pooled
//! connection keeps one read transaction for at most `READ_SNAPSHOT_MAX_AGE`
//! of use (starting a read transaction per statement costs more than the
//! lookup): a running `serve` sees what an import commits within that,
//! without a restart. An idle pooled connection's snapshot is ended by the
//! pool's sweeper ([`pool`]) within twice that, so no reader pins the WAL
//! and a checkpoint can backfill every frame an import wrote. An import is
//! one write transaction, so a killed import leaves the previous state.
//!
//! Readers map the database file (`mmap_size`, [`READER_MMAP_BYTES`]): a page
//! is then a memory access into the OS page cache, not a `pread` that copies
//! it into SQLite's small per-reader cache. Without the map the cost of a
//! lookup grows with the index (`pread` and page-cache copies; measured in
//! docs/src/performance.md, "Figures behind design choices"). Nothing truncates a served index file (no VACUUM of the
//! state dir's; an image's is immutable), so a mapped page never disappears
//! under a reader.

pub mod image;
pub mod import;
mod keys;
mod mapped;
mod pool;
mod row;

pub use keys::KeyDirStats;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::path_info::{parse_sigs, split_list};
use snix_lower_store_types::realisation::{DrvOutputId, Realisation};
use snix_lower_store_types::{NarHash, StorePath};

/// A column the index wrote that no longer parses (`column`: its number).
fn damaged(column: usize) -> impl Fn(String) -> rusqlite::Error {
    move |why| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            format!("damaged index row: {why}").into(),
        )
    }
}

/// A base name read from the index as text (`drv_outputs`, `realisations`),
/// validated like any input (a few hundred nanoseconds, no copy), so a
/// damaged or hand-edited index gives an error naming the row, never a panic.
fn parse_stored(s: String) -> rusqlite::Result<StorePath> {
    StorePath::from_owned_base_name(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("damaged index row: {e}").into(),
        )
    })
}

pub(crate) const INDEX_FILE: &str = "index.sqlite";
const SCHEMA_VERSION: &str = "4";
/// Older versions, refused with the command that rebuilds the index.
const OLDER_VERSIONS: &[&str] = &["2", "3"];

/// How much of the index file each pooled reader maps (SQLite clamps it to
/// its compile-time limit, 2 GiB in the bundled build). Address space only:
/// the pages are the OS page cache's, shared by every reader.
pub(crate) const READER_MMAP_BYTES: i64 = 1 << 40;

/// How long a pooled reader keeps one read snapshot (in use; an idle one's
/// ends within twice this, see [`pool`]).
pub const READ_SNAPSHOT_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(100);

pub use snix_lower_store_types::path_info::PathInfo;

/// What can go wrong opening or reading the index; every message names the
/// index file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("index {path} was built for store directory '{indexed}', not '{wanted}'; import into a separate --state-dir for each store directory")]
    StoreDirMismatch {
        path: PathBuf,
        indexed: String,
        wanted: String,
    },
    #[error("index {path} has schema version {found}, this snix-lower-store understands {SCHEMA_VERSION}; re-import into a new --state-dir")]
    SchemaMismatch { path: PathBuf, found: String },
    #[error("index {path} has the older schema version {found} (this snix-lower-store reads version {SCHEMA_VERSION}, which stores each fact once); rebuild it: {rebuild}")]
    SchemaOutdated {
        path: PathBuf,
        found: String,
        rebuild: &'static str,
    },
    #[error("index {0} does not exist yet; run `snix-lower-store import` first (or start `serve`, which creates an empty one)")]
    Missing(PathBuf),
    #[error("index {path} holds a corrupt entry for '{what}': {why}")]
    Corrupt { path: PathBuf, what: String, why: String },
    #[error("index {path}: the key directory is {why}; see the daemon's log for its build")]
    KeyDirectory { path: PathBuf, why: String },
}

/// Whether a base name is valid, without the key directory.
const VALID_SQL: &str = "SELECT 1 FROM paths WHERE base_name = ?1";

/// A `paths` row as QueryPathInfo reads it: the columns of [`path_columns`].
struct PathRow {
    refs: Vec<i64>,
    nar_hash: NarHash,
    nar_size: i64,
    deriver: Option<StorePath>,
    registration_time: i64,
    ultimate: bool,
    sigs: String,
    ca: Option<String>,
}

/// The columns of a [`PathRow`], in [`PathRow::read`]'s order.
macro_rules! path_columns {
    () => {
        "refs, nar_hash, nar_size, deriver, registration_time, ultimate, sigs, ca"
    };
}

/// The base names of 1 to 8 rows by id (references of one path).
const REFS_BY_ID: [&str; 8] = [
    "SELECT base_name FROM paths WHERE id IN (?1)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3, ?4)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3, ?4, ?5)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3, ?4, ?5, ?6)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "SELECT base_name FROM paths WHERE id IN (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
];

impl PathRow {
    /// Reads [`path_columns`] at columns 0 to 7.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<PathRow> {
        Ok(PathRow {
            refs: row::ref_ids(0, r.get_ref(0)?.as_blob()?)?,
            nar_hash: nar_hash_in(1, r.get_ref(1)?.as_blob()?)?,
            nar_size: r.get(2)?,
            deriver: row::opt_path_in(3, r.get_ref(3)?)?,
            registration_time: r.get(4)?,
            ultimate: r.get(5)?,
            sigs: r.get(6)?,
            ca: row::ca_in(7, r.get_ref(7)?)?,
        })
    }
}

/// A stored NAR hash (column `col`, for the error).
fn nar_hash_in(col: usize, b: &[u8]) -> rusqlite::Result<NarHash> {
    Ok(NarHash(b.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Blob, "NAR hash is not 32 bytes".into())
    })?))
}

/// The result of an index operation.
pub type Result<T> = std::result::Result<T, IndexError>;

/// The embedded path-info database (`index.sqlite` in the state dir), read
/// through a small pool of read-only connections. A clone is a second handle
/// on the same pool and key directory (two `Arc`s and the file name).
#[derive(Clone)]
pub struct PathInfoIndex {
    db_path: PathBuf,
    /// Opened with `immutable=1` (an image's own index): no locks, no
    /// journal, nothing written or created beside the file.
    immutable: bool,
    /// The path count of an index nothing can change (an image's, from its
    /// `meta`), so `count` reads no table: `count(*)` scans the whole
    /// `base_name` index, 0.3–0.7 s at 1M paths before `serve` accepts.
    fixed_count: std::sync::OnceLock<u64>,
    readers: std::sync::Arc<pool::Pool>,
    /// The in-memory key directory (see [`keys`]).
    keys: std::sync::Arc<keys::KeyState>,
}

struct Reader {
    conn: Connection,
    /// When the open read transaction began, if one is open.
    snapshot_since: Option<std::time::Instant>,
    /// Whether this snapshot's `max(id)` was compared with the key directory.
    keys_checked: bool,
    /// The key directory, if it describes this reader's snapshot.
    keys: Option<std::sync::Arc<keys::KeyDir>>,
}

/// Opens a read-only connection as every reader has it.
fn open_reader_conn(db_path: &Path, immutable: bool) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let c = if immutable {
        Connection::open_with_flags(immutable_uri(db_path), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(db_path, flags)
    }?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    // A small page cache per reader: the OS page cache holds the rest.
    c.pragma_update(None, "cache_size", -4096)?;
    c.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
    Ok(c)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS paths (
    id INTEGER PRIMARY KEY,
    base_name BLOB NOT NULL UNIQUE,
    nar_hash BLOB NOT NULL,
    nar_size INTEGER NOT NULL,
    deriver BLOB,
    registration_time INTEGER NOT NULL,
    ultimate INTEGER NOT NULL DEFAULT 0,
    sigs TEXT NOT NULL DEFAULT '',
    ca,
    refs BLOB NOT NULL DEFAULT x''
);
CREATE TABLE IF NOT EXISTS refs (
    referrer INTEGER NOT NULL REFERENCES paths(id),
    reference INTEGER NOT NULL REFERENCES paths(id),
    PRIMARY KEY (reference, referrer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drv_outputs (
    drv INTEGER NOT NULL REFERENCES paths(id),
    output TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (drv, output)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS drv_outputs_by_path ON drv_outputs (path);
CREATE TABLE IF NOT EXISTS realisations (
    drv_hash TEXT NOT NULL,
    output TEXT NOT NULL,
    out_path TEXT NOT NULL,
    sigs TEXT NOT NULL DEFAULT '',
    deps TEXT NOT NULL DEFAULT '',
    drv TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (drv_hash, output)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS realisations_by_drv ON realisations (drv, output);
";

impl PathInfoIndex {
    fn sql_err(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        |source| IndexError::Sqlite {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Open (creating if needed) the index in `state_dir` for `store_dir`.
    pub fn open_or_create(state_dir: &Path, store_dir: &str) -> Result<Self> {
        let db_path = state_dir.join(INDEX_FILE);
        let err = |source| IndexError::Sqlite {
            path: db_path.clone(),
            source,
        };
        let conn = Connection::open(&db_path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        // Schema and meta in one transaction: a creation killed half-way
        // leaves no `meta` table, which `open` reads as "does not exist yet".
        let tx = conn.unchecked_transaction().map_err(err)?;
        // An index of another version is left as it is, for `open` to refuse.
        if stored_version(&tx).map_err(err)?.is_none() {
            tx.execute_batch(SCHEMA).map_err(err)?;
            for (k, v) in [("schema_version", SCHEMA_VERSION), ("store_dir", store_dir)] {
                tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![k, v])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        drop(conn);
        Self::open(state_dir, store_dir)
    }

    /// Open an existing index read-only for serving and queries.
    pub fn open(state_dir: &Path, store_dir: &str) -> Result<Self> {
        Self::open_file(state_dir.join(INDEX_FILE), store_dir, false)
    }

    /// Open an index file that nothing may write to (an image's own index,
    /// see [`image`]) with SQLite's `immutable=1`.
    pub fn open_immutable(file: &Path, store_dir: &str) -> Result<Self> {
        Self::open_file(file.to_owned(), store_dir, true)
    }

    fn open_file(db_path: PathBuf, store_dir: &str, immutable: bool) -> Result<Self> {
        if !db_path.exists() {
            return Err(IndexError::Missing(db_path));
        }
        let idx = PathInfoIndex {
            db_path,
            immutable,
            fixed_count: std::sync::OnceLock::new(),
            readers: Default::default(),
            keys: Default::default(),
        };
        let (created, version, indexed) = idx.with_conn(|c| {
            // Creation commits schema and meta together: no `meta` table
            // means an empty file from a creation that never committed.
            let created = c
                .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")?
                .exists([])?;
            if !created {
                return Ok((false, None, None));
            }
            let get = |k: &str| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get::<_, String>(0))
                    .optional()
            };
            Ok((true, get("schema_version")?, get("store_dir")?))
        })?;
        if !created {
            return Err(IndexError::Missing(idx.db_path.clone()));
        }
        let version = version.unwrap_or_default();
        if OLDER_VERSIONS.contains(&version.as_str()) {
            return Err(IndexError::SchemaOutdated {
                path: idx.db_path.clone(),
                found: version,
                rebuild: if immutable {
                    "this is an image's own index; write it again with `snix-lower-store build-index` while the image is writable"
                } else {
                    "`snix-lower-store import` the lower store into a new, empty --state-dir and serve from that"
                },
            });
        }
        if version != SCHEMA_VERSION {
            return Err(IndexError::SchemaMismatch {
                path: idx.db_path.clone(),
                found: version,
            });
        }
        let indexed = indexed.unwrap_or_default();
        if indexed != store_dir {
            return Err(IndexError::StoreDirMismatch {
                path: idx.db_path.clone(),
                indexed,
                wanted: store_dir.into(),
            });
        }
        Ok(idx)
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    fn reader(&self) -> Result<Reader> {
        if let Some(r) = self.readers.take() {
            return Ok(r);
        }
        let c = open_reader_conn(&self.db_path, self.immutable).map_err(self.sql_err())?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(Reader {
            conn: c,
            snapshot_since: None,
            keys_checked: false,
            keys: None,
        })
    }

    /// Answers point lookups from an in-memory key directory ([`keys`]) from
    /// now on: starts building it in the background (SQLite answers until it
    /// is there) and rebuilds it after an import. For `serve`; one-shot
    /// commands do not pay for it.
    pub fn start_key_directory(&self) {
        self.keys.enable();
        self.build_keys(0);
    }

    /// The key directory's state and counters (the STATUS line's words).
    pub fn key_directory_stats(&self) -> KeyDirStats {
        self.keys.stats()
    }

    /// Waits until a reader's snapshot is answered from the key directory
    /// (after [`Self::start_key_directory`]), at most `timeout`; an error
    /// naming the index and the directory's state otherwise. For tests and
    /// harnesses that must exercise the directory, not SQLite.
    pub fn await_key_directory(&self, timeout: std::time::Duration) -> Result<()> {
        let t0 = std::time::Instant::now();
        while !self.with_keys(|_, k| Ok(k.is_some()))? {
            if t0.elapsed() > timeout {
                return Err(IndexError::KeyDirectory {
                    path: self.db_path.clone(),
                    why: format!("not in use after {timeout:?} ({})", self.key_directory_stats()),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(())
    }

    /// Starts building the key directory in the background, for a snapshot
    /// with `max(id)` `wanted` (see [`keys`] for when it does not).
    fn build_keys(&self, wanted: i64) {
        let (db, immutable) = (self.db_path.clone(), self.immutable);
        self.keys
            .rebuild(wanted, move || open_reader_conn(&db, immutable), self.db_path.clone());
    }

    /// Whether the key directory describes `r`'s snapshot (same `max(id)`);
    /// a snapshot newer than the directory starts a rebuild.
    fn check_keys(&self, r: &mut Reader) -> rusqlite::Result<()> {
        r.keys_checked = true;
        if !self.keys.enabled() {
            return Ok(());
        }
        let max: i64 = r
            .conn
            .prepare_cached("SELECT coalesce(max(id), 0) FROM paths")?
            .query_row([], |x| x.get(0))?;
        let (dir, stale) = self.keys.for_snapshot(max);
        if stale {
            self.build_keys(max);
        }
        r.keys = dir;
        Ok(())
    }

    /// [`Self::with_conn`], also handing `f` the key directory when it
    /// describes the snapshot.
    fn with_keys<T>(&self, f: impl FnOnce(&Connection, Option<&keys::KeyDir>) -> rusqlite::Result<T>) -> Result<T> {
        self.with_reader(true, |r| f(&r.conn, r.keys.as_deref()))
    }

    /// Run `f` on a pooled read connection, inside a read snapshot at most
    /// `READ_SNAPSHOT_MAX_AGE` old.
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.with_reader(false, |r| f(&r.conn))
    }

    fn with_reader<T>(&self, keys: bool, f: impl FnOnce(&Reader) -> rusqlite::Result<T>) -> Result<T> {
        let mut r = self.reader()?;
        let fresh = r.snapshot_since.is_some_and(|t| t.elapsed() < READ_SNAPSHOT_MAX_AGE);
        if !fresh {
            if r.snapshot_since.take().is_some() {
                r.conn.execute_batch("COMMIT").map_err(self.sql_err())?;
            }
            r.conn.execute_batch("BEGIN").map_err(self.sql_err())?;
            r.snapshot_since = Some(std::time::Instant::now());
            r.keys_checked = false;
            r.keys = None;
        }
        let checked = if keys && !r.keys_checked {
            self.check_keys(&mut r)
        } else {
            Ok(())
        };
        let out = checked.and_then(|()| f(&r)).map_err(self.sql_err());
        if out.is_err() {
            // Start the next use from a clean state.
            let _ = r.conn.execute_batch("ROLLBACK");
            r.snapshot_since = None;
        }
        self.readers.put(r);
        out
    }

    /// Whether `p` is valid: by the key directory when it describes the
    /// snapshot (see [`keys`] for what a found key means), else by the
    /// `base_name` index.
    pub fn is_valid(&self, p: &StorePath) -> Result<bool> {
        self.with_keys(|c, keys| Self::is_valid_in(c, keys, p))
    }

    fn is_valid_in(c: &Connection, keys: Option<&keys::KeyDir>, p: &StorePath) -> rusqlite::Result<bool> {
        let key = row::key(p);
        match keys {
            Some(k) => Ok(k.lookup(&key).is_some()),
            None => c.prepare_cached(VALID_SQL)?.exists([key]),
        }
    }

    /// The subset of `paths` that is valid, in the order given.
    pub fn valid_subset(&self, paths: &[StorePath]) -> Result<Vec<StorePath>> {
        self.with_keys(|c, keys| Self::valid_subset_in(c, keys, paths))
    }

    fn valid_subset_in(
        c: &Connection,
        keys: Option<&keys::KeyDir>,
        paths: &[StorePath],
    ) -> rusqlite::Result<Vec<StorePath>> {
        let stored: Vec<Vec<u8>> = paths.iter().map(row::key).collect();
        let valid: Vec<bool> = match keys {
            Some(k) => k
                .lookup_many(stored.iter().map(Vec::as_slice))
                .iter()
                .map(Option::is_some)
                .collect(),
            None => {
                let mut st = c.prepare_cached(VALID_SQL)?;
                stored.iter().map(|k| st.exists([k])).collect::<rusqlite::Result<_>>()?
            }
        };
        Ok(paths
            .iter()
            .zip(valid)
            .filter(|(_, v)| *v)
            .map(|(p, _)| p.clone())
            .collect())
    }

    /// The row of `p`: by the id the key directory gives (one descent of
    /// the rowid table, the base name compared), else by `base_name`.
    fn path_row(c: &Connection, keys: Option<&keys::KeyDir>, p: &StorePath) -> rusqlite::Result<Option<PathRow>> {
        let key = row::key(p);
        if let Some(k) = keys {
            let Some(id) = k.lookup(&key) else {
                return Ok(None);
            };
            let found = c
                .prepare_cached(concat!(
                    "SELECT ",
                    path_columns!(),
                    ", base_name FROM paths WHERE id = ?1"
                ))?
                .query_row([id], |r| Ok((PathRow::read(r)?, r.get_ref(8)?.as_blob()? == key)))
                .optional()?;
            if let Some((row, true)) = found {
                return Ok(Some(row));
            }
            // Another name with the same key: ask the `base_name` index.
        }
        c.prepare_cached(concat!("SELECT ", path_columns!(), " FROM paths WHERE base_name = ?1"))?
            .query_row([key], PathRow::read)
            .optional()
    }

    pub fn path_info(&self, p: &StorePath) -> Result<Option<PathInfo>> {
        self.with_keys(|c, keys| Self::path_info_in(c, keys, p))
    }

    fn path_info_in(c: &Connection, keys: Option<&keys::KeyDir>, p: &StorePath) -> rusqlite::Result<Option<PathInfo>> {
        let Some(row) = Self::path_row(c, keys, p)? else {
            return Ok(None);
        };
        let mut references = match keys.and_then(|k| Self::refs_by_keys(k, &row.refs)) {
            Some(found) => found?,
            None => Self::refs_by_sql(c, &row.refs)?,
        };
        if references.len() != row.refs.len() {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Blob,
                format!(
                    "damaged index row of {}: a reference to a row that does not exist",
                    p.base_name()
                )
                .into(),
            ));
        }
        references.sort_unstable();
        Ok(Some(PathInfo {
            path: p.clone(),
            nar_hash: row.nar_hash,
            nar_size: row.nar_size as u64,
            references,
            deriver: row.deriver,
            registration_time: row.registration_time as u64,
            ultimate: row.ultimate,
            sigs: parse_sigs(&row.sigs).map_err(damaged(6))?,
            ca: row
                .ca
                .map(|c| ContentAddress::parse(&c))
                .transpose()
                .map_err(damaged(7))?,
        }))
    }

    /// The base names of reference ids from the key directory (which
    /// describes the reader's snapshot); `None` when it lacks one of them,
    /// so SQLite answers (and names the damage) instead.
    fn refs_by_keys(k: &keys::KeyDir, ids: &[i64]) -> Option<rusqlite::Result<Vec<StorePath>>> {
        let stored: Option<Vec<&[u8]>> = ids.iter().map(|&id| k.stored(id)).collect();
        Some(stored?.into_iter().map(|key| row::path_of(0, key)).collect())
    }

    /// The base names of reference ids by the rowid table: one statement
    /// per up to 8 references (a rowid descent each).
    fn refs_by_sql(c: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<StorePath>> {
        let mut references = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(REFS_BY_ID.len()) {
            let mut st = c.prepare_cached(REFS_BY_ID[chunk.len() - 1])?;
            let rows = st.query_map(rusqlite::params_from_iter(chunk), |r| row::path_in(0, r.get_ref(0)?))?;
            for r in rows {
                references.push(r?);
            }
        }
        Ok(references)
    }

    fn path_list(&self, sql: &str, arg: &dyn rusqlite::ToSql) -> Result<Vec<StorePath>> {
        self.with_conn(|c| Self::path_list_in(c, sql, arg))
    }

    /// The paths whose stored keys `sql` selects, sorted by base name.
    fn path_list_in(c: &Connection, sql: &str, arg: &dyn rusqlite::ToSql) -> rusqlite::Result<Vec<StorePath>> {
        let mut st = c.prepare_cached(sql)?;
        let rows = st.query_map([arg], |r| row::path_in(0, r.get_ref(0)?))?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        out.sort_unstable();
        Ok(out)
    }

    /// Valid paths that reference `p` (including `p` itself if self-referencing).
    pub fn referrers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        self.with_keys(|c, keys| Self::referrers_in(c, keys, p))
    }

    /// [`Self::referrers`]: by the row id the key directory names, its base
    /// name compared with `p`'s in the same statement (one row per referrer,
    /// or one with no referrer), so a row that only shares `p`'s key is never
    /// answered for it; else by the `base_name` index.
    fn referrers_in(c: &Connection, keys: Option<&keys::KeyDir>, p: &StorePath) -> rusqlite::Result<Vec<StorePath>> {
        let key = row::key(p);
        if let Some(k) = keys {
            let Some(id) = k.lookup(&key) else {
                return Ok(Vec::new());
            };
            let mut st = c.prepare_cached(
                "SELECT t.base_name = ?2, r2.base_name FROM paths t
                 LEFT JOIN refs r ON r.reference = t.id LEFT JOIN paths r2 ON r2.id = r.referrer
                 WHERE t.id = ?1",
            )?;
            let mut rows = st.query(params![id, key])?;
            let mut out = Vec::new();
            let mut own = false;
            while let Some(r) = rows.next()? {
                own = r.get(0)?;
                if !own {
                    break;
                }
                if let Some(n) = row::opt_path_in(1, r.get_ref(1)?)? {
                    out.push(n);
                }
            }
            if own {
                out.sort_unstable();
                return Ok(out);
            }
            // Another name with the same key: ask the `base_name` index.
        }
        Self::path_list_in(
            c,
            "SELECT r2.base_name FROM paths t JOIN refs r ON r.reference = t.id JOIN paths r2 ON r2.id = r.referrer
             WHERE t.base_name = ?1",
            &key,
        )
    }

    /// Valid derivations that have `p` among their outputs.
    pub fn valid_derivers(&self, p: &StorePath) -> Result<Vec<StorePath>> {
        self.path_list(
            "SELECT d.base_name FROM drv_outputs o JOIN paths d ON d.id = o.drv
             WHERE o.path = ?1",
            &p.base_name(),
        )
    }

    /// The output map of a valid derivation: name → path (None when the
    /// output has no static path, e.g. floating content-addressed).
    /// `None` if the derivation is not valid.
    pub fn derivation_outputs(&self, drv: &StorePath) -> Result<Option<snix_lower_store_types::drv::OutputMap>> {
        self.with_conn(|c| {
            let Some(id) = c
                .prepare_cached("SELECT id FROM paths WHERE base_name = ?1")?
                .query_row([row::key(drv)], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            // A floating output has no static path: its realisation, if
            // imported, gives it (Nix's daemon answers the same from its
            // Realisations table).
            let mut st = c.prepare_cached(
                "SELECT o.output, CASE WHEN o.path != '' THEN o.path ELSE coalesce(
                    (SELECT min(r.out_path) FROM realisations r WHERE r.drv = ?2 AND r.output = o.output), '') END
                 FROM drv_outputs o WHERE o.drv = ?1 ORDER BY o.output",
            )?;
            let rows = st.query_map(params![id, drv.base_name()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (name, path) = row?;
                let path = if path.is_empty() {
                    None
                } else {
                    Some(parse_stored(path)?)
                };
                out.push((name, path));
            }
            Ok(Some(out))
        })
    }

    /// The realisation of a derivation output, with its dependent
    /// realisations resolved to their output paths.
    pub fn realisation(&self, id: &DrvOutputId) -> Result<Option<Realisation>> {
        self.with_conn(|c| {
            let mut st =
                c.prepare_cached("SELECT out_path, sigs, deps FROM realisations WHERE drv_hash = ?1 AND output = ?2")?;
            let Some((out, sigs, deps)) = st
                .query_row([&id.drv_hash, &id.output], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let corrupt =
                |why: String| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, why.into());
            let mut dependent = Vec::new();
            for d in split_list(&deps) {
                let dep = DrvOutputId::parse(d).map_err(corrupt)?;
                let p = st
                    .query_row([&dep.drv_hash, &dep.output], |r| r.get::<_, String>(0))
                    .optional()?
                    .ok_or_else(|| corrupt(format!("dependent realisation {dep} of {id} is not indexed")))?;
                dependent.push((dep, parse_stored(p)?));
            }
            dependent.sort();
            let mut signatures: Vec<String> = split_list(&sigs).map(str::to_owned).collect();
            signatures.sort();
            Ok(Some(Realisation {
                id: id.clone(),
                out_path: parse_stored(out)?,
                signatures,
                dependent,
            }))
        })
    }

    pub fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>> {
        // A stored key starts with the hash part's bytes: one range holds
        // exactly the names with that hash part.
        let Some((lo, hi)) = row::hash_part_range(hash_part) else {
            return Ok(None);
        };
        self.with_conn(|c| {
            c.prepare_cached("SELECT base_name FROM paths WHERE base_name >= ?1 AND base_name < ?2 LIMIT 1")?
                .query_row([&lo, &hi], |r| row::path_in(0, r.get_ref(0)?))
                .optional()
        })
    }

    pub fn all_paths(&self) -> Result<Vec<StorePath>> {
        self.with_conn(|c| {
            let mut st = c.prepare_cached("SELECT base_name FROM paths")?;
            let rows = st.query_map([], |r| row::path_in(0, r.get_ref(0)?))?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.sort_unstable();
            Ok(out)
        })
    }

    /// Every path with its NAR hash and size, for verification.
    pub fn all_hashes(&self) -> Result<Vec<(StorePath, NarHash, u64)>> {
        self.with_conn(|c| {
            let mut st = c.prepare_cached("SELECT base_name, nar_hash, nar_size FROM paths")?;
            let rows = st.query_map([], |r| {
                Ok((
                    row::path_in(0, r.get_ref(0)?)?,
                    nar_hash_in(1, r.get_ref(1)?.as_blob()?)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    /// Records the path count of an immutable index (ignored otherwise: a
    /// state-dir index grows with each import).
    pub(crate) fn set_fixed_count(&self, n: u64) {
        if self.immutable {
            let _ = self.fixed_count.set(n);
        }
    }

    pub fn count(&self) -> Result<u64> {
        if let Some(&n) = self.fixed_count.get() {
            return Ok(n);
        }
        self.with_conn(|c| {
            c.query_row("SELECT count(*) FROM paths", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }
}

/// The schema version in `meta`, if the index has one (`None` for a file
/// that holds no committed creation yet).
fn stored_version(c: &Connection) -> rusqlite::Result<Option<String>> {
    let created = c
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")?
        .exists([])?;
    if !created {
        return Ok(None);
    }
    c.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .optional()
}

/// `file:<path>?mode=ro&immutable=1` for a database nobody writes while we
/// read it (an image's index, a Nix store's `db.sqlite`): never a lock or a
/// WAL. Every byte of the path but `[A-Za-z0-9/._~-]` is percent-encoded,
/// as SQLite's URI rules decode it (`%`, `?`, `#` would otherwise end or
/// escape the path; bytes that are not UTF-8 survive too).
pub(crate) fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A database under a directory whose name holds every character
    /// SQLite's URI syntax reads specially opens through its URI.
    #[test]
    fn immutable_uri_opens_any_path() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a b%25?x=1#frag&y");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("db.sqlite");
        Connection::open(&file)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (7);")
            .unwrap();
        let uri = immutable_uri(&file);
        assert!(
            uri.ends_with("/db.sqlite?mode=ro&immutable=1") && uri.contains("a%20b%2525%3Fx%3D1%23frag%26y"),
            "{uri}"
        );
        let c =
            Connection::open_with_flags(&uri, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI).unwrap();
        assert_eq!(c.query_row("SELECT x FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 7);
    }

    #[test]
    fn store_dir_mismatch_is_refused() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let e = PathInfoIndex::open(d.path(), "/other/store").err().unwrap();
        assert!(matches!(e, IndexError::StoreDirMismatch { .. }), "{e}");
    }

    #[test]
    fn uncommitted_creation_reads_as_missing() {
        let d = tempfile::tempdir().unwrap();
        // What a creation killed before its first commit leaves.
        std::fs::write(d.path().join(INDEX_FILE), b"").unwrap();
        let e = PathInfoIndex::open(d.path(), "/nix/store").err().unwrap();
        assert!(matches!(e, IndexError::Missing(_)), "{e}");
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        PathInfoIndex::open(d.path(), "/nix/store").unwrap();
    }

    /// What versions 2 and 3 wrote (3 added `realisations`): references
    /// twice, base names as text.
    const OLD_SCHEMA: &str = "
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE paths (id INTEGER PRIMARY KEY, base_name TEXT NOT NULL UNIQUE, nar_hash BLOB NOT NULL,
            nar_size INTEGER NOT NULL, deriver TEXT, registration_time INTEGER NOT NULL,
            ultimate INTEGER NOT NULL DEFAULT 0, sigs TEXT NOT NULL DEFAULT '', ca TEXT, refs TEXT NOT NULL DEFAULT '');
        CREATE TABLE refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL,
            PRIMARY KEY (referrer, reference)) WITHOUT ROWID;
        INSERT INTO meta VALUES ('store_dir', '/nix/store');
        INSERT INTO paths (base_name, nar_hash, nar_size, registration_time)
            VALUES ('00000000000000000000000000000000-a', zeroblob(32), 8, 1);";

    /// An index of an older version is refused, by `open`, `open_or_create`
    /// (every import, and `serve`) and as an image's index, each naming the
    /// command that rebuilds it; nothing is written to it.
    #[test]
    fn older_versions_are_refused_with_the_rebuild_command() {
        for old in ["2", "3"] {
            let d = tempfile::tempdir().unwrap();
            let file = d.path().join(INDEX_FILE);
            let c = Connection::open(&file).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.execute_batch(OLD_SCHEMA).unwrap();
            c.execute("INSERT INTO meta VALUES ('schema_version', ?1)", [old])
                .unwrap();
            drop(c);
            let before = std::fs::read(&file).unwrap();
            for e in [
                PathInfoIndex::open(d.path(), "/nix/store").err().unwrap(),
                PathInfoIndex::open_or_create(d.path(), "/nix/store").err().unwrap(),
            ] {
                assert!(matches!(e, IndexError::SchemaOutdated { .. }), "{e}");
                let m = e.to_string();
                assert!(
                    m.contains(&format!("version {old}")) && m.contains("snix-lower-store import"),
                    "{m}"
                );
            }
            let e = PathInfoIndex::open_immutable(&file, "/nix/store").err().unwrap();
            assert!(e.to_string().contains("snix-lower-store build-index"), "{e}");
            let c = Connection::open(&file).unwrap();
            let (version, tables): (String, i64) = c
                .query_row(
                    "SELECT (SELECT value FROM meta WHERE key = 'schema_version'), (SELECT count(*) FROM sqlite_master)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((version.as_str(), tables), (old, 5), "the old index was changed");
            drop(c);
            assert_eq!(std::fs::read(&file).unwrap(), before, "the old index file was written");
        }
    }

    #[test]
    fn unknown_version_is_a_mismatch() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let c = Connection::open(d.path().join(INDEX_FILE)).unwrap();
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", [])
            .unwrap();
        drop(c);
        let e = PathInfoIndex::open(d.path(), "/nix/store").err().unwrap();
        assert!(matches!(e, IndexError::SchemaMismatch { .. }), "{e}");
    }

    #[test]
    fn readers_map_the_index_file() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let file = d.path().join(INDEX_FILE);
        for idx in [
            PathInfoIndex::open(d.path(), "/nix/store").unwrap(),
            PathInfoIndex::open_immutable(&file, "/nix/store").unwrap(),
        ] {
            let mapped = idx
                .with_conn(|c| c.query_row("PRAGMA mmap_size", [], |r| r.get::<_, i64>(0)))
                .unwrap();
            assert!(mapped >= 1 << 30, "reader maps only {mapped} bytes");
        }
    }

    #[test]
    fn only_an_immutable_index_takes_a_fixed_count() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let state = PathInfoIndex::open(d.path(), "/nix/store").unwrap();
        state.set_fixed_count(7);
        assert_eq!(state.count().unwrap(), 0);
        let image = PathInfoIndex::open_immutable(&d.path().join(INDEX_FILE), "/nix/store").unwrap();
        image.set_fixed_count(7);
        assert_eq!(image.count().unwrap(), 7);
    }

    /// Inserts a bare `paths` row as an import would (in its own commit).
    fn insert_path(file: &Path, base_name: &str) {
        let c = Connection::open(file).unwrap();
        c.execute(
            "INSERT INTO paths (base_name, nar_hash, nar_size, registration_time) VALUES (?1, zeroblob(32), 8, 1)",
            [row::key(&StorePath::from_base_name(base_name).unwrap())],
        )
        .unwrap();
    }

    fn wait_for_key_dir(idx: &PathInfoIndex, max_id: i64) {
        for _ in 0..500 {
            if idx.keys.current().is_some_and(|d| d.max_id == max_id) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no key directory for max(id) {max_id} after 5 s");
    }

    #[test]
    fn key_directory_answers_and_sees_a_later_import() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let file = d.path().join(INDEX_FILE);
        let a = StorePath::from_base_name(&format!("{}-a", "0".repeat(32))).unwrap();
        let a_renamed = StorePath::from_base_name(&format!("{}-b", "0".repeat(32))).unwrap();
        let later = StorePath::from_base_name(&format!("{}-c", "1".repeat(32))).unwrap();
        insert_path(&file, a.base_name());
        let idx = PathInfoIndex::open(d.path(), "/nix/store").unwrap();
        idx.start_key_directory();
        wait_for_key_dir(&idx, 1);
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE);
        assert!(idx.with_keys(|_, k| Ok(k.is_some())).unwrap(), "directory not used");
        assert!(idx.is_valid(&a).unwrap());
        assert!(!idx.is_valid(&a_renamed).unwrap());
        assert_eq!(idx.path_info(&a).unwrap().map(|i| i.nar_size), Some(8));
        assert_eq!(idx.path_info(&a_renamed).unwrap(), None);
        assert_eq!(idx.valid_subset(&[later.clone(), a.clone()]).unwrap(), vec![a.clone()]);
        // An import while serving: seen at the next snapshot, the stale
        // directory is not used, and a new one is built.
        insert_path(&file, later.base_name());
        Connection::open(&file)
            .unwrap()
            .execute("INSERT INTO refs (referrer, reference) VALUES (2, 1)", [])
            .unwrap();
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE);
        assert!(idx.is_valid(&later).unwrap());
        assert_eq!(idx.referrers(&a).unwrap(), vec![later.clone()]);
        assert_eq!(idx.path_info(&later).unwrap().map(|i| i.path), Some(later.clone()));
        wait_for_key_dir(&idx, 2);
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE);
        assert!(
            idx.with_keys(|_, k| Ok(k.is_some())).unwrap(),
            "rebuilt directory not used"
        );
        assert_eq!(idx.referrers(&a).unwrap(), vec![later.clone()]);
        assert_eq!(idx.referrers(&a_renamed).unwrap(), vec![]);
        assert_eq!(idx.referrers(&later).unwrap(), vec![]);
        assert_eq!(idx.valid_subset(&[later.clone(), a.clone()]).unwrap(), vec![later, a]);
    }

    /// A 0-bit key: every name has one key, so the directory names one row
    /// for all of them. QueryPathInfo and QueryReferrers still answer each
    /// name's own row (the base-name compare), and IsValidPath shows the
    /// directory answered (a 0-bit key calls every name valid, which is why
    /// real keys have 128 bits).
    #[test]
    fn colliding_keys_answer_each_name_exactly() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let file = d.path().join(INDEX_FILE);
        let p = |h: char, n: &str| StorePath::from_base_name(&format!("{}-{n}", h.to_string().repeat(32))).unwrap();
        let (a, b, ra, rb, absent) = (p('a', "a"), p('b', "b"), p('c', "ra"), p('d', "rb"), p('f', "absent"));
        for x in [&a, &b, &ra, &rb] {
            insert_path(&file, x.base_name());
        }
        let c = Connection::open(&file).unwrap();
        c.execute_batch("INSERT INTO refs VALUES (3, 1), (4, 2), (4, 4); UPDATE paths SET nar_size = id;")
            .unwrap();
        let idx = PathInfoIndex::open(d.path(), "/nix/store").unwrap();
        idx.keys.set_key_bits(0);
        idx.start_key_directory();
        idx.await_key_directory(std::time::Duration::from_secs(10)).unwrap();
        assert!(idx.is_valid(&absent).unwrap(), "the 0-bit directory did not answer");
        assert_eq!(idx.referrers(&a).unwrap(), vec![ra.clone()]);
        assert_eq!(idx.referrers(&b).unwrap(), vec![rb.clone()]);
        assert_eq!(idx.referrers(&rb).unwrap(), vec![rb.clone()]);
        assert_eq!(idx.referrers(&ra).unwrap(), vec![]);
        assert_eq!(idx.referrers(&absent).unwrap(), vec![]);
        for (x, size) in [(&a, 1), (&b, 2), (&ra, 3), (&rb, 4)] {
            assert_eq!(
                idx.path_info(x).unwrap().map(|i| (i.path, i.nar_size)),
                Some((x.clone(), size))
            );
        }
        assert_eq!(idx.path_info(&absent).unwrap(), None);
        let st = idx.key_directory_stats();
        assert!(st.from_directory > 0 && st.builds == 1, "{st}");
    }

    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

    fn random_hash_part(rng: &mut fastrand::Rng) -> String {
        (0..32).map(|_| NIX32[rng.usize(..NIX32.len())] as char).collect()
    }

    /// One random index for [`key_directory_answers_as_sql_over_random_indexes`].
    struct RandomIndex {
        /// Every name, imported or not; several share each hash part.
        names: Vec<StorePath>,
        /// After each import: a reader pinned at that snapshot and a
        /// directory built from it with keys of the case's bits.
        stages: Vec<(Connection, std::sync::Arc<keys::KeyDir>)>,
    }

    /// A reader whose read transaction holds the current snapshot.
    fn pinned_reader(file: &Path) -> Connection {
        let c = open_reader_conn(file, false).unwrap();
        c.execute_batch("BEGIN").unwrap();
        c.query_row("SELECT count(*) FROM paths", [], |r| r.get::<_, i64>(0))
            .unwrap();
        c
    }

    /// Three imports of random names with random references (self and
    /// earlier rows included) into the index file; a quarter of the names
    /// stay out.
    fn random_index(rng: &mut fastrand::Rng, file: &Path, bits: u32) -> RandomIndex {
        let suffixes = ["a", "b", "a.drv", "lib-1.0", "x"];
        let mut names = Vec::new();
        for _ in 0..rng.usize(4..16) {
            let h = random_hash_part(rng);
            for s in &suffixes[..rng.usize(1..=suffixes.len())] {
                names.push(StorePath::from_base_name(&format!("{h}-{s}")).unwrap());
            }
        }
        rng.shuffle(&mut names);
        let imported = names.len() - names.len() / 4;
        let mut c = Connection::open(file).unwrap();
        let (mut next, mut stages) = (0usize, Vec::new());
        for stage in 0..3 {
            // At least one row per import, so each has its own max(id).
            let left = imported - next - (2 - stage);
            let n = if stage == 2 {
                left
            } else {
                rng.usize(1..=left.div_ceil(2))
            };
            let tx = c.transaction().unwrap();
            for p in &names[next..next + n] {
                tx.execute(
                    "INSERT INTO paths (base_name, nar_hash, nar_size, registration_time) VALUES (?1, zeroblob(32), ?2, 1)",
                    params![row::key(p), rng.i64(1..1000)],
                )
                .unwrap();
            }
            let first = next as i64 + 1;
            next += n;
            // Each reference in both places, as an import stores it: the
            // row's id list (QueryPathInfo) and `refs` (QueryReferrers).
            for referrer in first..=next as i64 {
                let ids: Vec<i64> = (0..rng.usize(0..4)).map(|_| rng.i64(1..=next as i64)).collect();
                for &reference in &ids {
                    tx.execute(
                        "INSERT OR IGNORE INTO refs (referrer, reference) VALUES (?1, ?2)",
                        [referrer, reference],
                    )
                    .unwrap();
                }
                tx.execute(
                    "UPDATE paths SET refs = ?2 WHERE id = ?1",
                    params![referrer, row::ref_ids_blob(ids)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            let dir = keys::KeyDir::build(&open_reader_conn(file, false).unwrap(), bits)
                .unwrap()
                .unwrap();
            stages.push((pinned_reader(file), std::sync::Arc::new(dir)));
        }
        RandomIndex { names, stages }
    }

    /// What the directory may answer for IsValidPath: SQL's answer, or
    /// "valid" for a name whose key is a valid name's (never at 128 bits).
    fn valid_by_keys(c: &Connection, d: &keys::KeyDir, p: &StorePath) -> bool {
        let key = d.key_of(&row::key(p));
        let mut st = c.prepare_cached("SELECT base_name FROM paths").unwrap();
        let names: Vec<Vec<u8>> = st.query_map([], |r| r.get(0)).unwrap().map(|n| n.unwrap()).collect();
        names.iter().any(|n| d.key_of(n) == key)
    }

    /// References [`compare_with_sql`] read from a key directory.
    static REFS_COMPARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Every query of every name through reader `c` with directory `dir`
    /// (as `check_keys` chose it) against plain SQL on the same snapshot.
    /// Returns how many lookups named another name's row (collisions).
    fn compare_with_sql(c: &Connection, dir: Option<&keys::KeyDir>, names: &[StorePath], bits: u32) -> usize {
        type I = PathInfoIndex;
        let mut collisions = 0;
        let mut want_subset = Vec::new();
        for p in names {
            let sql = I::is_valid_in(c, None, p).unwrap();
            let got = I::is_valid_in(c, dir, p).unwrap();
            let allowed = match dir {
                Some(d) if bits < keys::KEY_BITS => sql || valid_by_keys(c, d, p),
                _ => sql,
            };
            assert_eq!(
                got,
                allowed,
                "IsValidPath {p:?} ({bits}-bit key, directory {})",
                dir.is_some()
            );
            if got {
                want_subset.push(p.clone());
            }
            let info = I::path_info_in(c, dir, p).unwrap();
            assert_eq!(info, I::path_info_in(c, None, p).unwrap(), "{p:?}");
            if let (Some(d), Some(i)) = (dir, &info) {
                // The references came from the directory's stored keys.
                let id = d.lookup(&row::key(p)).unwrap();
                let ids = row::ref_ids(
                    0,
                    &c.query_row("SELECT refs FROM paths WHERE id = ?1", [id], |r| r.get::<_, Vec<u8>>(0))
                        .unwrap(),
                )
                .unwrap();
                assert!(ids.iter().all(|&r| d.stored(r).is_some()), "{p:?}: {ids:?}");
                REFS_COMPARED.fetch_add(i.references.len(), std::sync::atomic::Ordering::Relaxed);
            }
            assert_eq!(
                I::referrers_in(c, dir, p).unwrap(),
                I::referrers_in(c, None, p).unwrap(),
                "{p:?}"
            );
            if let Some(id) = dir.and_then(|d| d.lookup(&row::key(p))) {
                let at: Vec<u8> = c
                    .query_row("SELECT base_name FROM paths WHERE id = ?1", [id], |r| r.get(0))
                    .unwrap();
                collisions += usize::from(at != row::key(p));
            }
        }
        assert_eq!(I::valid_subset_in(c, dir, names).unwrap(), want_subset);
        collisions
    }

    /// Differential test: over random indexes (names sharing hash parts,
    /// names never imported, three imports), keys of 0 to 128 bits, and
    /// every pairing of a reader snapshot with a directory built before, at
    /// or after it: the key directory path answers as plain SQL does
    /// (IsValidPath and QueryValidPaths up to the keys they share, which
    /// at 128 bits is never), and the directory is used exactly when it
    /// describes the reader's snapshot. Seeded; SNIX_KEYDIR_CASES sets the
    /// number of cases (default 40).
    #[test]
    fn key_directory_answers_as_sql_over_random_indexes() {
        let cases: u64 = std::env::var("SNIX_KEYDIR_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        let mut collisions = 0;
        for case in 0..cases {
            let mut rng = fastrand::Rng::with_seed(0x6b65_7964_6972 ^ case);
            let bits = [0, 1, 2, 4, 8, 128][rng.usize(..6)];
            let d = tempfile::tempdir().unwrap();
            PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
            let file = d.path().join(INDEX_FILE);
            let x = random_index(&mut rng, &file, bits);
            let mut asked = x.names.clone();
            rng.shuffle(&mut asked);
            for (k, (reader, _)) in x.stages.iter().enumerate() {
                let max: i64 = reader
                    .query_row("SELECT coalesce(max(id), 0) FROM paths", [], |r| r.get(0))
                    .unwrap();
                let built = x.stages.iter().map(|(_, d)| Some(d.clone()));
                for (j, current) in std::iter::once(None).chain(built).enumerate() {
                    let state = keys::KeyState::default();
                    state.enable();
                    state.install(current);
                    let (dir, stale) = state.for_snapshot(max);
                    // j = 0: none built; j = k + 1: built from this snapshot.
                    assert_eq!(dir.is_some(), j == k + 1, "case {case}: reader {k}, directory {j}");
                    assert_eq!(stale, j < k + 1, "case {case}: reader {k}, directory {j}");
                    collisions += compare_with_sql(reader, dir.as_deref(), &asked, bits);
                }
            }
        }
        assert!(
            cases < 10 || collisions > 0,
            "{cases} cases never named another name's row: the collision paths did not run"
        );
        assert!(
            cases < 10 || REFS_COMPARED.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{cases} cases never read a reference from a key directory"
        );
    }

    #[test]
    fn no_key_directory_unless_started() {
        let d = tempfile::tempdir().unwrap();
        PathInfoIndex::open_or_create(d.path(), "/nix/store").unwrap();
        let a = StorePath::from_base_name(&format!("{}-a", "0".repeat(32))).unwrap();
        insert_path(&d.path().join(INDEX_FILE), a.base_name());
        let idx = PathInfoIndex::open(d.path(), "/nix/store").unwrap();
        assert!(idx.is_valid(&a).unwrap());
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE * 2);
        assert!(idx.is_valid(&a).unwrap());
        assert!(
            idx.keys.current().is_none(),
            "a directory was built without start_key_directory"
        );
        assert!(!idx.with_keys(|_, k| Ok(k.is_some())).unwrap());
    }

    #[test]
    fn missing_index_names_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let e = PathInfoIndex::open(d.path(), "/nix/store").err().unwrap();
        assert!(e.to_string().contains("snix-lower-store import"), "{e}");
    }
}
