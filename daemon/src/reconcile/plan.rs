//! Planning a reconcile: reads Nix's upper database (read-only, one read
//! transaction) and classifies every row against the upper layer directory
//! and the new lower index. Pure apart from those reads, so the unit tests
//! drive it over small databases with Nix's schema.
//!
//! Invariants: a row whose path has an entry in the upper layer (anything
//! but an OverlayFS whiteout) is an upper path and is never lost or changed;
//! every other row must equal the new lower's info on the compared fields
//! (see the module header of [`super`]); `broken` is the referrer closure of
//! `lost` in the upper database's `Refs`, minus `lost` itself.

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use snix_lower_store_types::content_address::ContentAddress;
use snix_lower_store_types::path_info::split_list;
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::{NarHash, StorePath};

/// One `ValidPaths` row, as Nix's `schema.sql` declares it.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub id: i64,
    pub path: String,
    pub hash: String,
    pub nar_size: Option<i64>,
    pub sigs: Option<String>,
    pub ca: Option<String>,
}

/// The upper database as read in one snapshot.
pub(crate) struct UpperDb {
    pub rows: Vec<Row>,
    /// referrer id → reference ids (`Refs`), self-references included.
    pub references: HashMap<i64, Vec<i64>>,
    /// reference id → referrer ids, self-references left out.
    pub referrers: HashMap<i64, Vec<i64>>,
}

/// Reads `ValidPaths` and `Refs` in one read transaction.
pub(crate) fn read_upper_db(db: &Path) -> Result<UpperDb> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening Nix's upper database {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    let tx = conn.unchecked_transaction()?;
    let ctx = || format!("reading Nix's upper database {}", db.display());
    let mut st = tx
        .prepare("SELECT id, path, hash, narSize, sigs, ca FROM ValidPaths")
        .with_context(ctx)?;
    let rows = st
        .query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                path: r.get(1)?,
                hash: r.get(2)?,
                nar_size: r.get(3)?,
                sigs: r.get(4)?,
                ca: r.get(5)?,
            })
        })
        .with_context(ctx)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .with_context(ctx)?;
    let mut references: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut referrers: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut st = tx.prepare("SELECT referrer, reference FROM Refs").with_context(ctx)?;
    let mut q = st.query([]).with_context(ctx)?;
    while let Some(r) = q.next().with_context(ctx)? {
        let (from, to): (i64, i64) = (r.get(0)?, r.get(1)?);
        references.entry(from).or_default().push(to);
        if from != to {
            referrers.entry(to).or_default().push(from);
        }
    }
    Ok(UpperDb {
        rows,
        references,
        referrers,
    })
}

/// A row present in the new lower with different info.
#[derive(Clone, Debug)]
pub(crate) struct Changed {
    pub path: String,
    /// Names of the differing fields (`narHash`, `narSize`, `ca`, `sigs`).
    pub fields: Vec<&'static str>,
    /// The new lower's info, as Nix would copy it now.
    pub new: PathInfo,
    /// Whether some other row refers to it (then it is updated in place,
    /// else invalidated through Nix and copied again on its next use).
    pub referenced: bool,
}

/// A valid path whose closure reaches a lost path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Broken {
    pub path: String,
    /// Whether it has files in the upper layer (built or added on top).
    pub in_upper: bool,
    /// The lost paths its closure reaches.
    pub needs: Vec<String>,
}

/// What reconcile must do; empty when the upper database agrees with the lower.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub checked: usize,
    /// Not in the new lower (or in it with other references), no upper files.
    pub lost: BTreeMap<String, &'static str>,
    pub changed: Vec<Changed>,
    pub broken: Vec<Broken>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.lost.is_empty() && self.changed.is_empty() && self.broken.is_empty()
    }
}

/// How one row compares.
enum Class {
    Same,
    Lost(&'static str),
    Changed(Vec<&'static str>, Box<PathInfo>),
}

/// Whether `upper_layer/<base>` holds the path's files: an entry that is not
/// an OverlayFS whiteout (a character device 0:0).
pub(crate) fn in_upper_layer(upper_layer: &Path, base: &str) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match std::fs::symlink_metadata(upper_layer.join(base)) {
        Ok(m) => !(m.file_type().is_char_device() && m.rdev() == 0),
        Err(_) => false,
    }
}

/// Plans a reconcile of `db` against the upper layer and the new lower
/// (`lookup` answers from its index).
pub(crate) fn plan(
    db: &UpperDb,
    store_dir: &str,
    upper_layer: &Path,
    lookup: &dyn Fn(&StorePath) -> Result<Option<PathInfo>>,
) -> Result<Plan> {
    let by_id: HashMap<i64, &Row> = db.rows.iter().map(|r| (r.id, r)).collect();
    let mut plan = Plan {
        checked: db.rows.len(),
        ..Default::default()
    };
    let mut lost_ids = Vec::new();
    for row in &db.rows {
        let base = base_name(store_dir, &row.path)?;
        if in_upper_layer(upper_layer, base.base_name()) {
            continue;
        }
        match classify(db, &by_id, row, &base, lookup)? {
            Class::Same => {}
            Class::Lost(why) => {
                plan.lost.insert(row.path.clone(), why);
                lost_ids.push(row.id);
            }
            Class::Changed(fields, new) => plan.changed.push(Changed {
                path: row.path.clone(),
                fields,
                new: *new,
                referenced: db.referrers.get(&row.id).is_some_and(|v| !v.is_empty()),
            }),
        }
    }
    plan.broken = broken(db, &by_id, &lost_ids, upper_layer, store_dir)?;
    Ok(plan)
}

fn base_name(store_dir: &str, path: &str) -> Result<StorePath> {
    let base = path
        .strip_prefix(store_dir)
        .and_then(|p| p.strip_prefix('/'))
        .with_context(|| format!("upper database row '{path}' is not under the store dir {store_dir}"))?;
    StorePath::from_base_name(base).with_context(|| format!("upper database row '{path}'"))
}

/// Compares one row without upper files with the new lower's info.
fn classify(
    db: &UpperDb,
    by_id: &HashMap<i64, &Row>,
    row: &Row,
    base: &StorePath,
    lookup: &dyn Fn(&StorePath) -> Result<Option<PathInfo>>,
) -> Result<Class> {
    let Some(new) = lookup(base)? else {
        return Ok(Class::Lost("not in the new lower"));
    };
    let upper_refs: BTreeSet<&str> = db
        .references
        .get(&row.id)
        .into_iter()
        .flatten()
        .filter_map(|id| by_id.get(id))
        .map(|r| r.path.rsplit('/').next().unwrap_or(""))
        .collect();
    let new_refs: BTreeSet<&str> = new.references.iter().map(|r| r.base_name()).collect();
    if upper_refs != new_refs {
        return Ok(Class::Lost("in the new lower with other references"));
    }
    let mut fields = Vec::new();
    if NarHash::parse(&row.hash).ok() != Some(new.nar_hash) {
        fields.push("narHash");
    }
    if row.nar_size.unwrap_or(0) as u64 != new.nar_size {
        fields.push("narSize");
    }
    let ca = row.ca.as_deref().filter(|c| !c.is_empty());
    if ca != new.ca.as_ref().map(ContentAddress::render).as_deref() {
        fields.push("ca");
    }
    let sigs: BTreeSet<&str> = split_list(row.sigs.as_deref().unwrap_or("")).collect();
    let new_sigs: Vec<String> = new.sigs.iter().map(|s| s.to_string()).collect();
    if sigs != new_sigs.iter().map(String::as_str).collect() {
        fields.push("sigs");
    }
    Ok(match fields.is_empty() {
        true => Class::Same,
        false => Class::Changed(fields, Box::new(new)),
    })
}

/// The referrer closure of the lost rows (minus them), each with the lost
/// paths its own closure reaches.
fn broken(
    db: &UpperDb,
    by_id: &HashMap<i64, &Row>,
    lost: &[i64],
    upper_layer: &Path,
    store_dir: &str,
) -> Result<Vec<Broken>> {
    let lost_set: BTreeSet<i64> = lost.iter().copied().collect();
    let reached = closure(lost, &db.referrers);
    let mut out = Vec::new();
    for id in reached.iter().filter(|id| !lost_set.contains(id)) {
        let Some(row) = by_id.get(id) else { continue };
        let needs = closure(&[*id], &db.references)
            .into_iter()
            .filter(|i| lost_set.contains(i))
            .filter_map(|i| by_id.get(&i).map(|r| r.path.clone()))
            .collect::<BTreeSet<_>>();
        let base = base_name(store_dir, &row.path)?;
        out.push(Broken {
            path: row.path.clone(),
            in_upper: in_upper_layer(upper_layer, base.base_name()),
            needs: needs.into_iter().collect(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Every id reachable from `start` along `edges`, `start` included.
fn closure(start: &[i64], edges: &HashMap<i64, Vec<i64>>) -> BTreeSet<i64> {
    let mut seen: BTreeSet<i64> = start.iter().copied().collect();
    let mut todo: VecDeque<i64> = start.iter().copied().collect();
    while let Some(id) = todo.pop_front() {
        for next in edges.get(&id).into_iter().flatten() {
            if seen.insert(*next) {
                todo.push_back(*next);
            }
        }
    }
    seen
}

/// `paths` ordered so that every path comes after all its referrers among
/// them (Nix's `--delete` refuses a path whose referrer stays valid).
pub(crate) fn referrers_first(db: &UpperDb, paths: &BTreeSet<String>) -> Vec<String> {
    let ids: HashMap<&str, i64> = db
        .rows
        .iter()
        .filter(|r| paths.contains(&r.path))
        .map(|r| (r.path.as_str(), r.id))
        .collect();
    let wanted: BTreeSet<i64> = ids.values().copied().collect();
    let path_of: HashMap<i64, &str> = ids.iter().map(|(p, i)| (*i, *p)).collect();
    let mut pending: HashMap<i64, usize> = wanted
        .iter()
        .map(|id| {
            let n = db
                .referrers
                .get(id)
                .into_iter()
                .flatten()
                .filter(|r| wanted.contains(r))
                .count();
            (*id, n)
        })
        .collect();
    let mut ready: VecDeque<i64> = pending.iter().filter(|(_, n)| **n == 0).map(|(i, _)| *i).collect();
    let mut out = Vec::with_capacity(wanted.len());
    while let Some(id) = ready.pop_front() {
        out.push(path_of[&id].to_string());
        for r in db.references.get(&id).into_iter().flatten().filter(|r| **r != id) {
            if let Some(n) = pending.get_mut(r) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(*r);
                }
            }
        }
    }
    // Paths not in the database (already gone) go last; Nix skips them.
    out.extend(paths.iter().filter(|p| !ids.contains_key(p.as_str())).cloned());
    out
}
