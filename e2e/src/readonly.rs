//! The read-only guarantee: everything our daemon serves (lower directories
//! and index files) is byte-for-byte unchanged at the end of the run.
//!
//! Every `snix-lower-store serve` the suite starts registers its lower dir
//! and, when it reads the embedded index, its state dir. The first time a
//! directory is registered, before our daemon first opens it, it is hashed:
//! a lower dir as a sorted walk (names, types, modes, owners, mtimes,
//! symlink targets, file lengths and contents); a state dir as the bytes of
//! every file in it after a WAL checkpoint (`PRAGMA wal_checkpoint(TRUNCATE)`,
//! run by the suite, never by our daemon), so the whole index lives in the
//! main file. At the end of the run, with every
//! daemon stopped, the same hashes are taken again and must match.
//!
//! The `-shm` file is not hashed: it is SQLite's shared-memory index of the
//! WAL, which every reader (read-only ones included) writes by design.
//!
//! Images (`scripts/mk-lower-image`) are registered when made: the
//! directory form's image root walked as a lower dir (its `nix/store` and,
//! beside it, `.snix-lower-store/{index,id,registration}`, so the walk covers
//! the index byte for byte), the erofs form as a file (SHA-256 of its
//! bytes). A state dir our daemon was told to use for an image but must never
//! create is registered as one that must stay absent, and is checked too.
//!
//! Some scenarios change a lower store on purpose (the local-overlay
//! scenarios that add to or delete from the lower store with Nix directly,
//! or corrupt it behind everyone's back); they say so with
//! [`Registry::changed_on_purpose`] and that lower dir is left out, visibly,
//! with the reason. Their index files are still checked: each change is
//! picked up by a re-import into a new state dir, never by writing an old one.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Registry {
    /// Lower dirs (host path) -> hash before first serve.
    lowers: BTreeMap<PathBuf, String>,
    /// State dirs (host path) -> hash before first serve.
    states: BTreeMap<PathBuf, String>,
    /// Image files (host path) -> SHA-256 when made.
    files: BTreeMap<PathBuf, String>,
    /// Paths that must not exist at the end (state dirs of image daemons).
    absent: std::collections::BTreeSet<PathBuf>,
    /// Lower dirs changed deliberately by a scenario, with the reason.
    excluded: BTreeMap<PathBuf, String>,
    /// Hashing problems met while registering (reported at the end).
    problems: Vec<String>,
}

/// What [`Registry::check`] looked at.
pub struct Summary {
    pub lowers: usize,
    pub states: usize,
    pub files: usize,
    pub absent: usize,
    pub excluded: usize,
}

impl Registry {
    /// Called before our daemon is started on `lower` (and `state`, when it
    /// reads the embedded index). Host paths.
    pub fn serving(&mut self, lower: &Path, state: Option<&Path>) {
        hash_once(&mut self.lowers, &mut self.problems, lower, lower_hash);
        if let Some(state) = state {
            hash_once(&mut self.states, &mut self.problems, state, index_hash);
        }
    }

    /// An image file (erofs) our daemon will serve through a mount; hashed
    /// the first time. Host path.
    pub fn serving_file(&mut self, file: &Path) {
        hash_once(&mut self.files, &mut self.problems, file, file_hash);
    }

    /// A path our daemon is given (a state dir next to an image) but must
    /// never create. Host path.
    pub fn must_stay_absent(&mut self, path: &Path) {
        if path.exists() {
            self.problems
                .push(format!("{} exists before our daemon was started", path.display()));
        }
        self.absent.insert(path.to_path_buf());
    }

    /// A scenario is about to change `lower` itself (not through our daemon).
    pub fn changed_on_purpose(&mut self, lower: &Path, why: &str) {
        // The most specific (latest) reason is kept.
        self.excluded.insert(lower.to_path_buf(), why.to_string());
    }

    pub fn is_empty(&self) -> bool {
        self.lowers.is_empty() && self.states.is_empty() && self.files.is_empty()
    }

    /// Hashes everything again; every difference is an error.
    pub fn check(&self) -> Result<Summary> {
        let mut errors = self.problems.clone();
        for (dir, before) in &self.lowers {
            if self.excluded.contains_key(dir) {
                continue;
            }
            match lower_hash(dir) {
                Ok(after) if &after == before => {}
                Ok(_) => errors.push(format!("lower dir {} changed", dir.display())),
                Err(e) => errors.push(format!("hashing {}: {e:#}", dir.display())),
            }
        }
        for (dir, before) in &self.states {
            match index_hash(dir) {
                Ok(after) if &after == before => {}
                Ok(_) => errors.push(format!("index in {} changed", dir.display())),
                Err(e) => errors.push(format!("hashing {}: {e:#}", dir.display())),
            }
        }
        for (file, before) in &self.files {
            match file_hash(file) {
                Ok(after) if &after == before => {}
                Ok(after) => errors.push(format!(
                    "image file {} changed: sha256 {before} before, {after} after",
                    file.display()
                )),
                Err(e) => errors.push(format!("hashing {}: {e:#}", file.display())),
            }
        }
        for p in self.absent.iter().filter(|p| p.symlink_metadata().is_ok()) {
            errors.push(format!(
                "{} exists: our daemon serving an image created its state dir",
                p.display()
            ));
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(Summary {
            lowers: self.lowers.len() - self.excluded_served(),
            states: self.states.len(),
            files: self.files.len(),
            absent: self.absent.len(),
            excluded: self.excluded_served(),
        })
    }

    fn excluded_served(&self) -> usize {
        self.lowers.keys().filter(|d| self.excluded.contains_key(*d)).count()
    }

    /// Why served lower dirs were left out: each reason with its dirs.
    pub fn exclusions(&self) -> Vec<String> {
        let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (d, why) in &self.excluded {
            if self.lowers.contains_key(d) {
                // <scenario dir>/lower/nix/store: name the scenario dir.
                let short = d
                    .ancestors()
                    .nth(3)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| d.display().to_string());
                by_reason.entry(why).or_default().push(short);
            }
        }
        by_reason
            .into_iter()
            .map(|(why, dirs)| format!("left out ({}): {why}: {}", dirs.len(), dirs.join(" ")))
            .collect()
    }
}

/// Sorted walk of a lower dir (never following symlinks): for each entry
/// its path, type, mode, owner, mtime and symlink target or file length and
/// contents, all in one SHA-256.
pub fn lower_hash(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    walk(dir, Path::new("."), &mut h)?;
    Ok(hex(&h.finalize()))
}

fn walk(root: &Path, rel: &Path, h: &mut Sha256) -> Result<()> {
    let p = root.join(rel);
    let md = std::fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
    h.update(rel.as_os_str().as_bytes());
    h.update([0]);
    let ft = md.file_type();
    h.update(format!(
        "{} {:o} {}:{} {}.{}\0",
        if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else {
            '?'
        },
        md.mode() & 0o7777,
        md.uid(),
        md.gid(),
        md.mtime(),
        md.mtime_nsec()
    ));
    if ft.is_symlink() {
        h.update(std::fs::read_link(&p)?.as_os_str().as_bytes());
        h.update([0]);
    } else if ft.is_file() {
        h.update(md.len().to_le_bytes());
        let mut f = std::fs::File::open(&p).with_context(|| format!("open {}", p.display()))?;
        std::io::copy(&mut f, h)?;
    } else if ft.is_dir() {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&p)
            .with_context(|| format!("readdir {}", p.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        h.update((names.len() as u64).to_le_bytes());
        for n in names {
            walk(root, &rel.join(n), h)?;
        }
    }
    Ok(())
}

/// Records `hash(path)` in `seen` the first time `path` is registered; a
/// hashing error is kept in `problems` (reported at the end).
fn hash_once(
    seen: &mut BTreeMap<PathBuf, String>,
    problems: &mut Vec<String>,
    path: &Path,
    hash: fn(&Path) -> Result<String>,
) {
    if seen.contains_key(path) {
        return;
    }
    match hash(path) {
        Ok(h) => {
            seen.insert(path.to_path_buf(), h);
        }
        Err(e) => problems.push(format!("hashing {}: {e:#}", path.display())),
    }
}

/// SHA-256 of a file's bytes.
pub fn file_hash(file: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(file).with_context(|| format!("open {}", file.display()))?;
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", file.display()))?;
    Ok(hex(&h.finalize()))
}

/// Checkpoints every SQLite file in a state dir (TRUNCATE: the WAL is
/// emptied into the main file; refused while a process holds the index open),
/// then hashes the names and contents of every file in it but SQLite's
/// `-shm` files.
pub fn index_hash(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let dbs: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .collect();
    if dbs.is_empty() {
        bail!("no index file in {}", dir.display());
    }
    for db in &dbs {
        let c = rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        let (busy, _, _): (i64, i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .with_context(|| format!("checkpointing {}", db.display()))?;
        if busy != 0 {
            bail!("checkpointing {}: a process still has it open", db.display());
        }
        c.close().map_err(|(_, e)| e)?;
    }
    let mut h = Sha256::new();
    // Listed again: closing the last connection removes the -wal file.
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    for f in files {
        let name = f.file_name().unwrap_or_default();
        if name.as_bytes().ends_with(b"-shm") {
            continue;
        }
        let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(hex(&h.finalize()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("e2e-readonly-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lower_hash_sees_every_kind_of_change() {
        let d = scratch("lower");
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), b"contents").unwrap();
        std::os::unix::fs::symlink("b/f", d.join("a/l")).unwrap();
        let h0 = lower_hash(&d).unwrap();
        assert_eq!(h0, lower_hash(&d).unwrap(), "stable");
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let keep = mtime(&d.join("a/b/f"));
        std::fs::write(d.join("a/b/f"), b"Contents").unwrap();
        let f = std::fs::File::options().write(true).open(d.join("a/b/f")).unwrap();
        f.set_modified(keep).unwrap();
        assert_ne!(h0, lower_hash(&d).unwrap(), "same-size content change");
        std::fs::write(d.join("a/b/f"), b"contents").unwrap();
        f.set_modified(keep).unwrap();
        assert_eq!(h0, lower_hash(&d).unwrap(), "restored");
        std::fs::set_permissions(d.join("a/b/f"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h0, lower_hash(&d).unwrap(), "mode change");
        std::fs::set_permissions(d.join("a/b/f"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let dir_mtime = mtime(&d.join("a"));
        std::fs::remove_file(d.join("a/l")).unwrap();
        std::os::unix::fs::symlink("b/g", d.join("a/l")).unwrap();
        std::fs::File::open(d.join("a"))
            .unwrap()
            .set_modified(dir_mtime)
            .unwrap();
        assert_ne!(h0, lower_hash(&d).unwrap(), "symlink target change");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn index_hash_sees_a_write_and_ignores_a_reader() {
        let d = scratch("index");
        let db = d.join("index.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        drop(c);
        let h0 = index_hash(&d).unwrap();
        let r = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let n: i64 = r.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        drop(r);
        assert_eq!(h0, index_hash(&d).unwrap(), "a reader changes nothing");
        let w = rusqlite::Connection::open(&db).unwrap();
        w.execute("INSERT INTO t VALUES (2)", []).unwrap();
        drop(w);
        assert_ne!(h0, index_hash(&d).unwrap(), "a write is seen");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn image_files_and_absent_state_dirs_are_checked() {
        let d = scratch("image");
        let file = d.join("img.erofs");
        std::fs::write(&file, b"erofs bytes").unwrap();
        let absent = d.join("no-state");
        let mut reg = Registry::default();
        reg.serving_file(&file);
        reg.must_stay_absent(&absent);
        assert!(!reg.is_empty());
        let s = reg.check().unwrap();
        assert_eq!((s.files, s.absent), (1, 1));
        std::fs::write(&file, b"erofs bytez").unwrap();
        let e = format!("{:#}", reg.check().err().expect("a changed image file is found"));
        assert!(e.contains("img.erofs changed"), "{e}");
        std::fs::write(&file, b"erofs bytes").unwrap();
        reg.check().unwrap();
        std::fs::create_dir(&absent).unwrap();
        let e = format!("{:#}", reg.check().err().expect("a created state dir is found"));
        assert!(e.contains("no-state exists"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
