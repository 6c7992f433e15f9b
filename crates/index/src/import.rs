//! Importing path infos into the index: the three sources Nix users have, and
//! one all-or-nothing transaction.
//!
//! - registration files (`nix-store --dump-db`, nixpkgs' closureInfo
//!   `registration`, the input of `nix-store --load-db`);
//! - `nix path-info --json` output (Nix 2.26's object keyed by full path,
//!   Nix 2.34's `--json-format 1` and `--json-format 2`);
//! - a Nix store's `db.sqlite`, opened read-only, with its realisations of
//!   content-addressed derivation outputs (`Realisations`, `RealisationsRefs`;
//!   present only where Nix ran with `ca-derivations`).
//!
//! Every entry is validated (store path syntax, hash encoding, references
//! closed within index plus batch, a supplied `ca` that recomputes to the
//! store path as Nix requires (`store::content_address`), the object present
//! in the lower dir, and with `check_content` its NAR hash and size) before
//! anything is written; one bad entry refuses the whole import, naming it.
//! A realisation must name a valid output path (indexed or in the batch) and
//! dependent realisations that are indexed or in the batch.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{PathInfoIndex, INDEX_FILE};
use snix_lower_store_types::ca_proof::{self, CaProofOptions};
use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::path::shown;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::path_info::{join_sigs, parse_sigs, split_list};
use snix_lower_store_types::path_info_json;
use snix_lower_store_types::progress::Progress;
use snix_lower_store_types::realisation::DrvOutputId;
use snix_lower_store_types::{drv, NarHash, StoreDir, StorePath};

/// One realisation to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRealisation {
    pub id: DrvOutputId,
    pub out_path: StorePath,
    pub signatures: Vec<String>,
    pub dependent: Vec<DrvOutputId>,
}

/// Why an import wrote nothing: a source that does not parse, a batch that
/// fails validation (every problem listed), or the index or a Nix database
/// that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: entry {entry}: {why}")]
    Parse {
        source_name: String,
        entry: usize,
        why: String,
    },
    #[error("import refused, nothing was written ({} problem(s)):\n  {}", .0.len(), .0.join("\n  "))]
    Rejected(Vec<String>),
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Index(#[from] super::IndexError),
    #[error("Nix database {path}: {source}")]
    NixDb { path: String, source: rusqlite::Error },
}

/// What an import did: paths added, and batch paths already indexed as given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub added: usize,
    pub unchanged: usize,
}

fn perr(source_name: &str, entry: usize, why: impl ToString) -> ImportError {
    ImportError::Parse {
        source_name: source_name.into(),
        entry,
        why: why.to_string(),
    }
}

/// Parse the registration format: per path, lines `path`, `narHash`,
/// `narSize`, `deriver` (may be empty), `n`, then `n` reference lines.
/// Errors name the entry (1-based) and the line.
pub fn parse_registration(text: &str, sd: &StoreDir, source_name: &str) -> Result<Vec<PathInfo>, ImportError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut out = Vec::new();
    while let Some((path_line, path)) = lines.next() {
        let n = out.len() + 1;
        let at = |line: usize, why: String| perr(source_name, n, format!("line {line}: {why}"));
        if path.is_empty() {
            // Trailing blank lines end the file; a blank line mid-file is an error below.
            if lines.clone().all(|(_, l)| l.is_empty()) {
                break;
            }
            return Err(at(path_line, "empty line where a store path was expected".into()));
        }
        let shown_path = shown(path);
        let mut next = |what: &str| {
            lines
                .next()
                .ok_or_else(|| at(path_line, format!("file ends before the {what} of {shown_path}")))
        };
        let path_p = sd.parse(path).map_err(|e| at(path_line, e.to_string()))?;
        let (l, hash_s) = next("NAR hash")?;
        let nar_hash = NarHash::parse(hash_s).map_err(|e| at(l, e.to_string()))?;
        let (l, size_s) = next("NAR size")?;
        let nar_size = size_s.parse::<u64>().map_err(|_| {
            at(
                l,
                format!("NAR size '{}' of {shown_path} is not a number", shown(size_s)),
            )
        })?;
        let (l, deriver_s) = next("deriver")?;
        let deriver = if deriver_s.is_empty() {
            None
        } else {
            Some(sd.parse(deriver_s).map_err(|e| at(l, e.to_string()))?)
        };
        let (l, count_s) = next("reference count")?;
        let count = count_s.parse::<usize>().map_err(|_| {
            at(
                l,
                format!("reference count '{}' of {shown_path} is not a number", shown(count_s)),
            )
        })?;
        let mut references = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let (l, r) = next("references")?;
            references.push(sd.parse(r).map_err(|e| at(l, e.to_string()))?);
        }
        out.push(PathInfo {
            references,
            deriver,
            ..PathInfo::new(path_p, nar_hash, nar_size)
        });
    }
    Ok(out)
}

/// Parse `nix path-info --json` output (format 1 or 2, object or legacy
/// array): [`snix_lower_store_types::path_info_json::parse`], its error
/// naming `source_name`.
pub fn parse_path_info_json(text: &str, sd: &StoreDir, source_name: &str) -> Result<Vec<PathInfo>, ImportError> {
    path_info_json::parse(text, sd).map_err(|e| perr(source_name, e.entry, e.why))
}

/// Opens a Nix store's `db.sqlite` read-only and immutable: never take
/// locks or touch the WAL of a store we do not own.
fn open_nix_db(db: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        super::immutable_uri(db),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
}

/// Read every valid path from a Nix store's `db.sqlite`, read-only.
pub fn read_nix_db(db: &Path, sd: &StoreDir) -> Result<Vec<PathInfo>, ImportError> {
    let name = db.display().to_string();
    let err = |source| ImportError::NixDb {
        path: name.clone(),
        source,
    };
    let c = open_nix_db(db).map_err(err)?;
    let mut refs: HashMap<i64, Vec<String>> = HashMap::new();
    {
        let mut st = c
            .prepare("SELECT r.referrer, p.path FROM Refs r JOIN ValidPaths p ON p.id = r.reference")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        for row in rows {
            let (id, p) = row.map_err(err)?;
            refs.entry(id).or_default().push(p);
        }
    }
    let mut st = c
        .prepare("SELECT id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca FROM ValidPaths ORDER BY path")
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let (id, path, hash, reg, deriver, size, ultimate, sigs, ca) = row.map_err(err)?;
        let n = i + 1;
        let p = |s: &str| sd.parse(s).map_err(|e| perr(&name, n, e));
        let mut references = Vec::new();
        for r in refs.remove(&id).unwrap_or_default() {
            references.push(p(&r)?);
        }
        let path = p(&path)?;
        let nar_hash = NarHash::parse(&hash).map_err(|e| perr(&name, n, e))?;
        out.push(PathInfo {
            references,
            deriver: deriver.filter(|d| !d.is_empty()).map(|d| p(&d)).transpose()?,
            registration_time: reg.unwrap_or(0) as u64,
            ultimate: ultimate.unwrap_or(0) != 0,
            sigs: parse_sigs(&sigs.unwrap_or_default()).map_err(|e| perr(&name, n, e))?,
            ca: ca
                .filter(|c| !c.is_empty())
                .map(|c| ContentAddress::parse_quoted(&c))
                .transpose()
                .map_err(|e| perr(&name, n, e))?,
            ..PathInfo::new(path, nar_hash, size.unwrap_or(0) as u64)
        });
    }
    Ok(out)
}

/// Read the realisations of a Nix store's `db.sqlite`, read-only. A database
/// Nix never opened with `ca-derivations` has no `Realisations` table: none.
pub fn read_nix_db_realisations(db: &Path, sd: &StoreDir) -> Result<Vec<NewRealisation>, ImportError> {
    let name = db.display().to_string();
    let err = |source| ImportError::NixDb {
        path: name.clone(),
        source,
    };
    let c = open_nix_db(db).map_err(err)?;
    let has_tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('Realisations', 'RealisationsRefs')",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if has_tables < 2 {
        return Ok(Vec::new());
    }
    let id_of = |n: usize, hash: &str, output: &str| {
        DrvOutputId::parse(&format!("{hash}!{output}")).map_err(|e| perr(&format!("{name} (Realisations)"), n, e))
    };
    let mut deps: HashMap<i64, Vec<DrvOutputId>> = HashMap::new();
    {
        let mut st = c
            .prepare(
                "SELECT rr.referrer, d.drvPath, d.outputName FROM RealisationsRefs rr
                 JOIN Realisations d ON d.id = rr.realisationReference ORDER BY rr.referrer",
            )
            .map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(err)?;
        for (i, row) in rows.enumerate() {
            let (referrer, hash, output) = row.map_err(err)?;
            deps.entry(referrer).or_default().push(id_of(i + 1, &hash, &output)?);
        }
    }
    let mut st = c
        .prepare(
            "SELECT r.id, r.drvPath, r.outputName, p.path, r.signatures FROM Realisations r
             JOIN ValidPaths p ON p.id = r.outputPath ORDER BY r.drvPath, r.outputName",
        )
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let (rid, hash, output, path, sigs) = row.map_err(err)?;
        let n = i + 1;
        out.push(NewRealisation {
            id: id_of(n, &hash, &output)?,
            out_path: sd
                .parse(&path)
                .map_err(|e| perr(&format!("{name} (Realisations)"), n, e))?,
            signatures: split_list(&sigs.unwrap_or_default()).map(str::to_owned).collect(),
            dependent: deps.remove(&rid).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// How thoroughly an import checks the lower dir.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Re-hash every new path's NAR from the lower dir.
    pub check_content: bool,
    /// Which content addresses are derived, where the store path proves
    /// them, for entries that come without one (see `store::ca_proof`).
    pub ca_proof: CaProofOptions,
}

/// Validate `batch` against the index and the lower dir, then add it in one
/// transaction. Paths already indexed with the same NAR hash and size are
/// left as they are, so importing the same file twice is a no-op.
pub fn import(
    state_dir: &Path,
    sd: &StoreDir,
    lower: &LowerDir,
    batch: Vec<PathInfo>,
    opts: ImportOptions,
) -> Result<ImportReport, ImportError> {
    import_with_realisations(state_dir, sd, lower, batch, Vec::new(), opts)
}

/// [`import`], plus realisations, in the same transaction.
pub fn import_with_realisations(
    state_dir: &Path,
    sd: &StoreDir,
    lower: &LowerDir,
    batch: Vec<PathInfo>,
    realisations: Vec<NewRealisation>,
    opts: ImportOptions,
) -> Result<ImportReport, ImportError> {
    let progress = Progress::default();
    import_reporting(state_dir, sd, lower, batch, realisations, opts, &progress)
}

/// [`import_with_realisations`], telling `progress` which phase runs and
/// how many entries of it are done.
pub fn import_reporting(
    state_dir: &Path,
    sd: &StoreDir,
    lower: &LowerDir,
    batch: Vec<PathInfo>,
    realisations: Vec<NewRealisation>,
    opts: ImportOptions,
    progress: &Progress,
) -> Result<ImportReport, ImportError> {
    let db_path = state_dir.join(INDEX_FILE);
    let sql = sql_error(&db_path);
    let mut conn = open_for_import(state_dir, sd, &db_path)?;
    // IMMEDIATE: the write lock is taken before validation, so what we check
    // against is what we commit on top of.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let mut problems = Vec::new();
    let in_batch = batch_by_name(sd, &batch, &mut problems);
    let listing = lower_listing(lower, in_batch.len())?;
    let was_empty: bool = tx
        .query_row("SELECT NOT EXISTS (SELECT 1 FROM paths)", [], |r| r.get(0))
        .map_err(sql)?;
    let checks = Checks {
        sd,
        lower,
        listing: listing.as_ref(),
        was_empty,
        check_content: opts.check_content,
        progress,
    };
    progress.phase("checking", Some(in_batch.len() as u64));
    let Validated {
        mut new_paths,
        outside_ids,
        unchanged,
    } = checks.validate(&tx, &in_batch, &mut problems).map_err(sql)?;
    rejected_if_any(problems)?;
    progress.phase("proving content addresses", None);
    let mut problems = Vec::new();
    // A first bulk load builds the reverse index once, after the inserts.
    if was_empty && new_paths.len() > 10_000 {
        tx.execute_batch("DROP INDEX IF EXISTS drv_outputs_by_path;")
            .map_err(sql)?;
    }
    // Insert in path order so ids follow base names (better locality for scans).
    new_paths.sort_by(|a, b| a.path.cmp(&b.path));
    // Content addresses proven for the paths being added only: re-importing
    // an indexed store (the NixOS import unit, at every boot) reads no file.
    let mut to_add: Vec<PathInfo> = new_paths.iter().map(|e| (*e).clone()).collect();
    ca_proof::prove_missing_cas(&mut to_add, sd, lower.root(), opts.ca_proof);
    let new_paths: Vec<&PathInfo> = to_add.iter().collect();
    let ids = assign_ids(&tx, &new_paths).map_err(sql)?;
    let known = KnownIds {
        new: &ids,
        outside: &outside_ids,
    };
    progress.phase("writing", Some(new_paths.len() as u64));
    let (pairs, drv_outputs) =
        insert_paths(&tx, sd, lower, &new_paths, &known, &mut problems, progress).map_err(sql)?;
    progress.phase("writing references", Some(new_paths.len() as u64));
    insert_references(&tx, pairs, new_paths.len(), progress).map_err(sql)?;
    insert_derivation_outputs(&tx, sd, &drv_outputs, &mut problems).map_err(sql)?;
    add_realisations(&tx, sd, &realisations, &mut problems).map_err(sql)?;
    // Dropping the transaction rolls it back.
    rejected_if_any(problems)?;
    progress.phase("building indexes and committing", None);
    tx.execute_batch("CREATE INDEX IF NOT EXISTS drv_outputs_by_path ON drv_outputs (path);")
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    progress.finish(None);
    Ok(ImportReport {
        added: new_paths.len(),
        unchanged,
    })
}

/// Creates the index if needed (schema and store dir checked by
/// [`PathInfoIndex::open_or_create`]) and opens a connection tuned for one
/// large write transaction.
fn open_for_import(state_dir: &Path, sd: &StoreDir, db_path: &Path) -> Result<Connection, ImportError> {
    let sql = sql_error(db_path);
    let index = PathInfoIndex::open_or_create(state_dir, sd.as_str())?;
    let conn = Connection::open(db_path).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(60)).map_err(sql)?;
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "OFF").map_err(sql)?;
    drop(index);
    // A large page cache for the import only: it is mostly index lookups.
    conn.pragma_update(None, "cache_size", -262_144).map_err(sql)?;
    Ok(conn)
}

/// Maps an SQLite error on the index at `db_path` to [`ImportError::Index`].
fn sql_error(db_path: &Path) -> impl Fn(rusqlite::Error) -> ImportError + Copy + '_ {
    move |source| {
        ImportError::Index(super::IndexError::Sqlite {
            path: db_path.to_owned(),
            source,
        })
    }
}

/// `Err(Rejected)` with the problems sorted, if there are any.
fn rejected_if_any(mut problems: Vec<String>) -> Result<(), ImportError> {
    if problems.is_empty() {
        return Ok(());
    }
    problems.sort();
    Err(ImportError::Rejected(problems))
}

/// The batch by base name; a path listed twice with different NAR hashes or
/// sizes is a problem (the same entry twice is not).
fn batch_by_name<'b>(
    sd: &StoreDir,
    batch: &'b [PathInfo],
    problems: &mut Vec<String>,
) -> HashMap<&'b str, &'b PathInfo> {
    let mut in_batch: HashMap<&str, &PathInfo> = HashMap::with_capacity(batch.len());
    for e in batch {
        if let Some(prev) = in_batch.insert(e.path.base_name(), e) {
            if prev.nar_hash != e.nar_hash || prev.nar_size != e.nar_size {
                problems.push(format!(
                    "{}: listed twice with different NAR hashes",
                    sd.display(&e.path)
                ));
            }
        }
    }
    in_batch
}

/// For big batches (over 1000 paths) one listing of the lower dir replaces a
/// stat per path; `None` for smaller ones.
fn lower_listing(lower: &LowerDir, batch_len: usize) -> Result<Option<HashSet<Vec<u8>>>, ImportError> {
    use std::os::unix::ffi::OsStrExt;
    if batch_len <= 1000 {
        return Ok(None);
    }
    let io = |e| ImportError::Io(lower.root().display().to_string(), e);
    let mut set = HashSet::new();
    for ent in std::fs::read_dir(lower.root()).map_err(io)? {
        set.insert(ent.map_err(io)?.file_name().as_bytes().to_vec());
    }
    Ok(Some(set))
}

/// What validation found.
#[derive(Default)]
struct Validated<'b> {
    /// Batch paths not indexed yet: the ones to insert.
    new_paths: Vec<&'b PathInfo>,
    /// Row ids of paths outside the batch that new paths reference.
    outside_ids: HashMap<String, i64>,
    /// Batch paths already indexed with the same NAR hash and size.
    unchanged: usize,
}

/// Everything validation checks a batch entry against, besides the index.
struct Checks<'a> {
    sd: &'a StoreDir,
    lower: &'a LowerDir,
    listing: Option<&'a HashSet<Vec<u8>>>,
    /// The index had no path when the transaction began: nothing is indexed yet.
    was_empty: bool,
    check_content: bool,
    progress: &'a Progress,
}

impl Checks<'_> {
    /// Checks every batch entry (not indexed differently, references closed,
    /// a supplied `ca` that recomputes to the path, present in the lower dir,
    /// and its content if asked), collecting problems; writes nothing.
    fn validate<'b>(
        &self,
        tx: &Connection,
        in_batch: &HashMap<&str, &'b PathInfo>,
        problems: &mut Vec<String>,
    ) -> rusqlite::Result<Validated<'b>> {
        let mut existing = tx.prepare("SELECT nar_hash, nar_size FROM paths WHERE base_name = ?1")?;
        // Bound to stored keys (super::row): `indexed_unchanged` and
        // `check_references` pass them.
        let mut id_of = tx.prepare("SELECT id FROM paths WHERE base_name = ?1")?;
        let mut v = Validated::default();
        for e in in_batch.values() {
            self.progress.inc(1);
            let shown = self.sd.display(&e.path);
            if !self.was_empty {
                match indexed_unchanged(&mut existing, e)? {
                    Some(true) => {
                        v.unchanged += 1;
                        continue;
                    }
                    Some(false) => {
                        problems.push(format!("{shown}: already indexed with a different NAR hash or size; the lower store may only grow, never change"));
                        continue;
                    }
                    None => {}
                }
            }
            self.check_references(&mut id_of, e, &shown, in_batch, &mut v.outside_ids, problems)?;
            if let Some(Err(why)) = e.ca.as_ref().map(|ca| ca.check(self.sd, &e.path, &e.references)) {
                problems.push(format!("{shown}: {why}"));
            }
            if let Some(why) = self.lower_problem(e) {
                problems.push(format!("{shown}: {why}"));
            }
            v.new_paths.push(e);
        }
        Ok(v)
    }

    /// Every reference of `e` must be in the batch or indexed; the row ids of
    /// indexed ones are added to `outside_ids`.
    fn check_references(
        &self,
        id_of: &mut rusqlite::Statement<'_>,
        e: &PathInfo,
        shown: &str,
        in_batch: &HashMap<&str, &PathInfo>,
        outside_ids: &mut HashMap<String, i64>,
        problems: &mut Vec<String>,
    ) -> rusqlite::Result<()> {
        for r in &e.references {
            if in_batch.contains_key(r.base_name()) || outside_ids.contains_key(r.base_name()) {
                continue;
            }
            match id_of
                .query_row([super::row::key(r)], |row| row.get::<_, i64>(0))
                .optional()?
            {
                Some(id) if !self.was_empty => {
                    outside_ids.insert(r.base_name().to_owned(), id);
                }
                _ => problems.push(format!(
                    "{shown}: reference {} is neither indexed nor in this import (the closure must be complete)",
                    self.sd.display(r)
                )),
            }
        }
        Ok(())
    }

    /// What is wrong with `e`'s object in the lower dir (missing, or with
    /// `check_content` a NAR hash or size other than declared), if anything.
    fn lower_problem(&self, e: &PathInfo) -> Option<String> {
        let present = match self.listing {
            Some(set) if set.contains(e.path.base_name().as_bytes()) => Ok(()),
            Some(_) => Err(format!("not present in the lower dir {}", self.lower.root().display())),
            None => self.lower.check_present(&e.path).map_err(String::from),
        };
        match present {
            Err(why) => Some(why),
            Ok(()) if self.check_content => match self.lower.content_mismatch(&e.path, e.nar_hash, e.nar_size) {
                Ok(None) => None,
                Ok(Some((h, s))) => Some(format!(
                    "content does not match: NAR hash {} size {s} in the lower dir, {} size {} declared",
                    h.to_nix32_prefixed(),
                    e.nar_hash.to_nix32_prefixed(),
                    e.nar_size
                )),
                Err(err) => Some(format!("cannot hash its content: {err}")),
            },
            Ok(()) => None,
        }
    }
}

/// Whether `e` is indexed with its NAR hash and size (`Some(true)`), with
/// others (`Some(false)`), or not at all (`None`).
fn indexed_unchanged(existing: &mut rusqlite::Statement<'_>, e: &PathInfo) -> rusqlite::Result<Option<bool>> {
    Ok(existing
        .query_row([super::row::key(&e.path)], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?
        .map(|(h, s)| h == e.nar_hash.0 && s as u64 == e.nar_size))
}

/// A new derivation's row id, its path, and the outputs read from its `.drv`.
type DrvOutputs<'b> = Vec<(i64, &'b StorePath, Vec<drv::DrvOutput>)>;

/// The row ids the new paths will have, in the order given (after every
/// indexed id: ids only grow), by base name.
fn assign_ids<'b>(tx: &Connection, new_paths: &[&'b PathInfo]) -> rusqlite::Result<HashMap<&'b str, i64>> {
    let max: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM paths", [], |r| r.get(0))?;
    Ok(new_paths
        .iter()
        .zip(max + 1..)
        .map(|(e, id)| (e.path.base_name(), id))
        .collect())
}

/// The row ids a new path's references may have: a new path's, or an
/// indexed path's found during validation.
struct KnownIds<'a, 'b> {
    new: &'a HashMap<&'b str, i64>,
    outside: &'a HashMap<String, i64>,
}

impl KnownIds<'_, '_> {
    /// The row id of `r`; a batch path that was already indexed (unchanged)
    /// is looked up with `id_of`.
    fn of(&self, id_of: &mut rusqlite::Statement<'_>, r: &StorePath) -> rusqlite::Result<i64> {
        match self.new.get(r.base_name()).or_else(|| self.outside.get(r.base_name())) {
            Some(id) => Ok(*id),
            None => id_of.query_row([super::row::key(r)], |row| row.get::<_, i64>(0)),
        }
    }
}

/// Inserts the validated new paths (in the order given) with the ids
/// `known.new` assigned them; returns the (reference, referrer) pairs of
/// their references, and the outputs of the derivations among them (a
/// `.drv` that cannot be read is a problem).
fn insert_paths<'b>(
    tx: &Connection,
    sd: &StoreDir,
    lower: &LowerDir,
    new_paths: &[&'b PathInfo],
    known: &KnownIds<'_, '_>,
    problems: &mut Vec<String>,
    progress: &Progress,
) -> rusqlite::Result<(Vec<(i64, i64)>, DrvOutputs<'b>)> {
    use super::row;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut drv_outputs: DrvOutputs<'b> = Vec::new();
    let mut pairs = Vec::new();
    let mut id_of = tx.prepare("SELECT id FROM paths WHERE base_name = ?1")?;
    let mut ins = tx.prepare(
        "INSERT INTO paths (id, base_name, nar_hash, nar_size, deriver, registration_time, ultimate, sigs, ca, refs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for e in new_paths {
        progress.inc(1);
        let id = known.new[e.path.base_name()];
        let refs = e
            .references
            .iter()
            .map(|r| known.of(&mut id_of, r))
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        pairs.extend(refs.iter().map(|&r| (r, id)));
        ins.execute(params![
            id,
            row::key(&e.path),
            &e.nar_hash.0[..],
            e.nar_size as i64,
            e.deriver.as_ref().map(row::key),
            if e.registration_time == 0 {
                now
            } else {
                e.registration_time
            } as i64,
            e.ultimate,
            join_sigs(&e.sigs),
            e.ca.as_ref().map(|c| row::ca_value(&c.render())),
            row::ref_ids_blob(refs),
        ])?;
        if e.path.is_derivation() {
            match lower.read_derivation_outputs(&e.path) {
                Ok(outs) => drv_outputs.push((id, &e.path, outs)),
                Err(why) => problems.push(format!("{}: {why}", sd.display(&e.path))),
            }
        }
    }
    Ok((pairs, drv_outputs))
}

/// Inserts the (reference, referrer) rows of the new paths, in key order
/// (a first import then fills each page of `refs` once). `progress` counts
/// the phase in entries (`entries` of them), as the phases before it: the
/// pairs written are turned into their share of the entries.
fn insert_references(
    tx: &Connection,
    mut pairs: Vec<(i64, i64)>,
    entries: usize,
    progress: &Progress,
) -> rusqlite::Result<()> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut ins_ref = tx.prepare("INSERT OR IGNORE INTO refs (reference, referrer) VALUES (?1, ?2)")?;
    let (total, mut shown) = (pairs.len().max(1), 0);
    for (i, (to, from)) in pairs.into_iter().enumerate() {
        ins_ref.execute([to, from])?;
        let done = (i + 1) * entries / total;
        progress.inc((done - shown) as u64);
        shown = done;
    }
    progress.inc((entries - shown) as u64);
    Ok(())
}

/// Inserts the outputs of the new derivations (an output path that is not a
/// store path is a problem; a floating output has an empty path).
fn insert_derivation_outputs(
    tx: &Connection,
    sd: &StoreDir,
    drv_outputs: &DrvOutputs<'_>,
    problems: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let mut ins_out = tx.prepare("INSERT OR REPLACE INTO drv_outputs (drv, output, path) VALUES (?1, ?2, ?3)")?;
    for (id, d, outs) in drv_outputs {
        for o in outs {
            let base = if o.path.is_empty() {
                String::new()
            } else {
                match sd.parse(&o.path) {
                    Ok(p) => p.base_name().to_owned(),
                    Err(e) => {
                        problems.push(format!("{}: output {}: {e}", sd.display(d), o.name));
                        continue;
                    }
                }
            };
            ins_out.execute(params![id, o.name, base])?;
        }
    }
    Ok(())
}

/// Validate and insert `realisations` inside the import transaction (after
/// the batch's paths). Problems are collected, not returned early.
fn add_realisations(
    tx: &Connection,
    sd: &StoreDir,
    realisations: &[NewRealisation],
    problems: &mut Vec<String>,
) -> rusqlite::Result<()> {
    let in_this: std::collections::HashSet<&DrvOutputId> = realisations.iter().map(|r| &r.id).collect();
    let mut deriver_of = tx.prepare("SELECT deriver FROM paths WHERE base_name = ?1")?;
    let mut existing = tx.prepare("SELECT out_path FROM realisations WHERE drv_hash = ?1 AND output = ?2")?;
    let mut ins = tx.prepare(
        "INSERT INTO realisations (drv_hash, output, out_path, sigs, deps, drv) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in realisations {
        let shown = format!("realisation {}", r.id);
        // Every batch path is inserted by now, so the index alone says
        // whether the output path is valid.
        let Some(deriver) = deriver_of
            .query_row([super::row::key(&r.out_path)], |row| {
                super::row::opt_path_in(0, row.get_ref(0)?)
            })
            .optional()?
        else {
            problems.push(format!(
                "{shown}: output path {} is neither indexed nor in this import",
                sd.display(&r.out_path)
            ));
            continue;
        };
        let mut missing_dep = false;
        for d in &r.dependent {
            if !in_this.contains(d) && !existing.exists([&d.drv_hash, &d.output])? {
                problems.push(format!(
                    "{shown}: dependent realisation {d} is neither indexed nor in this import"
                ));
                missing_dep = true;
            }
        }
        if missing_dep {
            continue;
        }
        match existing
            .query_row([&r.id.drv_hash, &r.id.output], |row| row.get::<_, String>(0))
            .optional()?
        {
            Some(p) if p == r.out_path.base_name() => continue,
            Some(p) => {
                problems.push(format!(
                    "{shown}: already indexed as {}/{p}, not {}; the lower store may only grow, never change",
                    sd.as_str(),
                    sd.display(&r.out_path)
                ));
                continue;
            }
            None => {}
        }
        let mut sigs = r.signatures.clone();
        sigs.sort();
        sigs.dedup();
        let deps: Vec<String> = r.dependent.iter().map(DrvOutputId::to_string).collect();
        ins.execute(params![
            r.id.drv_hash,
            r.id.output,
            r.out_path.base_name(),
            sigs.join(" "),
            deps.join(" "),
            deriver.as_ref().map_or("", StorePath::base_name),
        ])?;
    }
    Ok(())
}
