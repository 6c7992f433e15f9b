//! `KeyDir`: an in-memory directory of the index's base names, so
//! IsValidPath, QueryValidPaths, QueryPathInfo and QueryReferrers do not
//! descend the `base_name` B-tree. At 1M paths that B-tree's leaves do not
//! fit the CPU caches, and a lookup touched two or three cold pages through
//! the mapped file (what that cost: docs/src/performance-images.md, "Cost
//! per request at 1M paths").
//!
//! Each path is a 128-bit key, the first 16 bytes of a BLAKE3 keyed hash of
//! its base name's stored key ([`super::row::key`]) under a key drawn from the OS at each build, stored with
//! the path's row id, sorted, with a bucket table on the key's top bits:
//! 20.5 bytes per path of anonymous memory (huge pages
//! where the kernel gives them). A lookup is one hash and two or three
//! cache lines. (Unit tests cut the key to a few bits, so that names share
//! keys and every collision path runs; the cut is a mask applied in the one
//! hash function, all ones outside tests.)
//!
//! It also keeps each row's stored key by id (the key bytes in one buffer,
//! and an 8-byte span per id), so QueryPathInfo turns its row's reference ids into base names
//! without a B-tree descent per reference ([`KeyDir::stored`]); the keys
//! are those of the directory's snapshot, so they answer only a reader of
//! that snapshot, as the rest of the directory does.
//!
//! Invariants:
//! - A directory describes the rows of one snapshot, identified by its
//!   `max(id)`: imports only insert rows, with increasing ids, and nothing
//!   deletes one, so two snapshots with the same `max(id)` hold the same
//!   paths. A reader uses the directory only when its own snapshot has that
//!   `max(id)`; otherwise it asks SQLite and a rebuild starts in the
//!   background, so a `serve` sees an import without a restart and never
//!   answers from a stale directory.
//! - A key absent from the directory is an exact "not valid": every valid
//!   name's key is in it.
//! - A key present answers "valid" for IsValidPath and QueryValidPaths. That
//!   is wrong only when the name is not valid and its key equals a valid
//!   name's. For a name chosen without knowledge of the key (the key is
//!   secret, drawn anew at each build, and never leaves the process), and
//!   BLAKE3 as a keyed pseudo-random function, each of the n keys in the
//!   directory equals the name's with probability 2^-128, so such a query
//!   is answered "valid" with probability at most n·2^-128 (3·10^-33 at 1M).
//! - A key present names one row with that key, which need not be the
//!   name's own (two names may share a key). QueryPathInfo and
//!   QueryReferrers read that row's base name and compare it with the name
//!   asked for; on a difference they ask the `base_name` index. Both are
//!   therefore exact whatever the key.
//! - Row ids above `u32::MAX` are not built into a directory (SQLite
//!   serves); ids only grow, so no build is tried again after that.
//! - A build runs on its own thread, one at a time. A failed build (or one
//!   that panicked: a drop guard clears `building` and records it) is not
//!   retried for the same or an older snapshot until its back-off ends (1 s,
//!   doubling per failure in a row, at most 5 min); a newer snapshot (an
//!   import) tries at once. Builds, failures and which snapshots answered
//!   from the directory are counted for the STATUS line ([`KeyDirStats`]).

use super::mapped::{Mapped, Plain};
use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Average bucket size the bucket table aims at.
const PER_BUCKET: usize = 8;

/// One path: its 128-bit key and row id, packed (20 bytes).
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Entry {
    hi: u64,
    lo: u64,
    id: u32,
}

// SAFETY: three integers, packed: every bit pattern is a valid `Entry`.
#[allow(unsafe_code)]
unsafe impl Plain for Entry {}

impl Entry {
    fn key(&self) -> (u64, u64) {
        (self.hi, self.lo)
    }
}

/// A fresh secret key for a directory's hash, from the OS.
fn random_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(format!("getrandom: {e}")))?;
    Ok(key)
}

/// Bits of key a directory keeps outside tests.
pub(crate) const KEY_BITS: u32 = 128;

/// A directory's hash of base names: BLAKE3 keyed with a secret key, the
/// first 16 bytes as a number, cut to the key's top bits by `mask`.
struct KeyHash {
    key: [u8; 32],
    mask: u128,
}

impl KeyHash {
    /// A fresh secret key; keys of `bits` bits (at most 128).
    fn new(bits: u32) -> std::io::Result<KeyHash> {
        let mask = u128::MAX.checked_shr(bits).map_or(u128::MAX, |m| !m);
        Ok(KeyHash {
            key: random_key()?,
            mask,
        })
    }

    /// The key of a stored base name key as (high, low) 64-bit words.
    fn of(&self, stored: &[u8]) -> (u64, u64) {
        let mut first = [0u8; 16];
        blake3::Hasher::new_keyed(&self.key)
            .update(stored)
            .finalize_xof()
            .fill(&mut first);
        let k = u128::from_le_bytes(first) & self.mask;
        ((k >> 64) as u64, k as u64)
    }
}

pub(crate) struct KeyDir {
    /// `max(id)` of the snapshot this was built from (0: no paths).
    pub(crate) max_id: i64,
    hash: KeyHash,
    /// Bucket of a key: `hi >> shift`.
    shift: u32,
    /// `entries[starts[b]..starts[b + 1]]` is bucket `b`, sorted by key.
    starts: Mapped<u32>,
    entries: Mapped<Entry>,
    /// Paths in the directory (`entries` may have unused slots after them).
    len: usize,
    /// By row id: `start << SPAN_LEN_BITS | len` of that row's stored key
    /// in `stored`; 0 for an id no row has (every key is longer than 0).
    spans: Mapped<u64>,
    /// The stored keys of every row, one after another.
    stored: Vec<u8>,
}

/// Bits of a span that hold the key's length.
const SPAN_LEN_BITS: u32 = 16;

impl KeyDir {
    /// The row id of the path with this stored base name's key, if any path has it.
    pub(crate) fn lookup(&self, stored: &[u8]) -> Option<i64> {
        let k = self.hash.of(stored);
        self.find(k, self.bucket(k))
    }

    /// [`Self::lookup`] of each name, in order. The memory accesses of all
    /// lookups are issued stage by stage (bucket bounds, then both ends of
    /// each bucket, then the searches), so their cache misses overlap instead
    /// of following one another: at 1M paths a QueryValidPaths of 32 spent
    /// most of its time waiting on them, one lookup at a time.
    pub(crate) fn lookup_many<'a>(&self, stored: impl Iterator<Item = &'a [u8]>) -> Vec<Option<i64>> {
        let keys: Vec<(u64, u64)> = stored.map(|n| self.hash.of(n)).collect();
        let buckets: Vec<std::ops::Range<usize>> = keys.iter().map(|&k| self.bucket(k)).collect();
        let mut touched = 0u64;
        for r in &buckets {
            if let (Some(a), Some(b)) = (
                self.entries.get(r.start),
                r.end.checked_sub(1).and_then(|e| self.entries.get(e)),
            ) {
                touched ^= a.hi ^ b.hi;
            }
        }
        std::hint::black_box(touched);
        keys.into_iter().zip(buckets).map(|(k, r)| self.find(k, r)).collect()
    }

    /// The slots of the bucket `k` falls in.
    fn bucket(&self, k: (u64, u64)) -> std::ops::Range<usize> {
        let b = (k.0 >> self.shift) as usize;
        self.starts[b] as usize..self.starts[b + 1] as usize
    }

    fn find(&self, k: (u64, u64), slots: std::ops::Range<usize>) -> Option<i64> {
        let bucket = &self.entries[slots];
        let i = bucket.partition_point(|e| e.key() < k);
        bucket.get(i).filter(|e| e.key() == k).map(|e| i64::from(e.id))
    }

    /// The stored key (base name) of row `id`, if a row of this snapshot has it.
    pub(crate) fn stored(&self, id: i64) -> Option<&[u8]> {
        let span = *self.spans.get(usize::try_from(id).ok()?)?;
        let (start, len) = (
            (span >> SPAN_LEN_BITS) as usize,
            (span & ((1 << SPAN_LEN_BITS) - 1)) as usize,
        );
        (len > 0).then(|| self.stored.get(start..start + len)).flatten()
    }

    /// The key of a stored base name in this directory.
    #[cfg(test)]
    pub(crate) fn key_of(&self, stored: &[u8]) -> (u64, u64) {
        self.hash.of(stored)
    }

    /// Paths in the directory.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory this directory holds.
    pub(crate) fn bytes(&self) -> usize {
        self.starts.len() * 4 + self.len * std::mem::size_of::<Entry>() + self.spans.len() * 8 + self.stored.len()
    }

    /// Reads every (id, base name) of the connection's current snapshot,
    /// with keys of `bits` bits ([`KEY_BITS`] outside tests). `None` when an
    /// id does not fit 32 bits.
    pub(crate) fn build(c: &Connection, bits: u32) -> rusqlite::Result<Option<KeyDir>> {
        c.execute_batch("BEGIN")?;
        let out = Self::build_in_snapshot(c, bits);
        let _ = c.execute_batch("COMMIT");
        out
    }

    fn build_in_snapshot(c: &Connection, bits: u32) -> rusqlite::Result<Option<KeyDir>> {
        let max_id: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM paths", [], |r| r.get(0))?;
        let Ok(max) = u32::try_from(max_id) else {
            return Ok(None);
        };
        let hash = KeyHash::new(bits).map_err(io_err)?;
        // Ids only grow and are never deleted: max(id) bounds the count.
        let mut entries = Mapped::<Entry>::zeroed(max as usize).map_err(io_err)?;
        let mut len = 0;
        let mut spans = Mapped::<u64>::zeroed(max as usize + 1).map_err(io_err)?;
        let mut stored = Vec::new();
        // ORDER BY base_name reads the covering `base_name` index, not the rows.
        let mut st = c.prepare("SELECT id, base_name FROM paths ORDER BY base_name")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id = u32::try_from(r.get::<_, i64>(0)?).map_err(|e| io_err(std::io::Error::other(e)))?;
            let name = r.get_ref(1)?.as_bytes()?;
            let (hi, lo) = hash.of(name);
            // A key too long for a span (only a damaged row) keeps span 0:
            // its referrers' names are read from SQLite.
            if let (Some(span), 1..0x1_0000) = (spans.get_mut(id as usize), name.len()) {
                *span = (stored.len() as u64) << SPAN_LEN_BITS | name.len() as u64;
                stored.extend_from_slice(name);
            }
            let slot = entries
                .get_mut(len)
                .ok_or_else(|| io_err(std::io::Error::other("more paths than max(id)")))?;
            *slot = Entry { hi, lo, id };
            len += 1;
        }
        stored.shrink_to_fit();
        entries[..len].sort_unstable_by_key(Entry::key);
        let bits = (len / PER_BUCKET).max(1).next_power_of_two().trailing_zeros().max(1);
        let shift = 64 - bits;
        let mut starts = Mapped::<u32>::zeroed((1usize << bits) + 1).map_err(io_err)?;
        for e in &entries[..len] {
            starts[(e.hi >> shift) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Ok(Some(KeyDir {
            max_id,
            hash,
            shift,
            starts,
            entries,
            len,
            spans,
            stored,
        }))
    }
}

/// The first wait before a failed build is tried again for the same snapshot.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between builds of one snapshot that keep failing.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The last failed build and how long its snapshot waits for the next.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    /// `max(id)` of the newest snapshot that asked for a build that failed.
    max_id: i64,
    /// Failed builds in a row for it.
    failed: u32,
    /// No build for a snapshot with this `max(id)` or an older one before.
    until: Instant,
}

impl Backoff {
    /// The back-off after a build asked for by snapshot `max_id` failed.
    fn after(prev: Option<Backoff>, max_id: i64, now: Instant) -> Backoff {
        let (max_id, failed) = match prev {
            Some(b) if b.max_id >= max_id => (b.max_id, b.failed.saturating_add(1)),
            _ => (max_id, 1),
        };
        let delay = RETRY_FIRST.saturating_mul(1 << (failed - 1).min(16)).min(RETRY_MAX);
        Backoff {
            max_id,
            failed,
            until: now + delay,
        }
    }

    /// Whether a snapshot with this `max(id)` waits.
    fn holds(&self, max_id: i64, now: Instant) -> bool {
        max_id <= self.max_id && now < self.until
    }
}

/// The key directory's part of the STATUS line: what is built, how builds
/// went, and how many reader snapshots answered from it or from SQLite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDirStats {
    /// Whether `serve` asked for a directory (`--no-key-directory`: false).
    pub enabled: bool,
    /// Paths in the current directory, if one is built.
    pub paths: Option<usize>,
    /// `max(id)` of the snapshot the current directory describes.
    pub max_id: Option<i64>,
    /// A build is running.
    pub building: bool,
    /// Row ids above 32 bits: no directory will be built.
    pub unbuildable: bool,
    /// Builds that succeeded.
    pub builds: u64,
    /// Builds that failed or panicked.
    pub failures: u64,
    /// Reader snapshots answered from the directory.
    pub from_directory: u64,
    /// Reader snapshots answered from SQLite while the directory was on
    /// (none built yet, or it described another snapshot).
    pub from_sqlite: u64,
}

impl std::fmt::Display for KeyDirStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.enabled {
            return f.write_str("key directory off");
        }
        match (self.paths, self.unbuildable) {
            (Some(n), _) => write!(f, "key directory: {n} paths")?,
            (None, true) => f.write_str("key directory: none (row ids above 32 bits)")?,
            (None, false) => f.write_str("key directory: none yet")?,
        }
        if self.building {
            f.write_str(", building")?;
        }
        write!(
            f,
            ", {} built, {} failed; {} reader snapshots answered from it, {} from SQLite",
            self.builds, self.failures, self.from_directory, self.from_sqlite
        )
    }
}

/// The current directory of an index and its background builder.
pub(crate) struct KeyState {
    enabled: AtomicBool,
    /// Bits of the keys of the next build ([`KEY_BITS`] outside tests).
    key_bits: AtomicU32,
    current: RwLock<Option<Arc<KeyDir>>>,
    building: AtomicBool,
    unbuildable: AtomicBool,
    backoff: Mutex<Option<Backoff>>,
    builds: AtomicU64,
    failures: AtomicU64,
    from_directory: AtomicU64,
    from_sqlite: AtomicU64,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            enabled: AtomicBool::new(false),
            key_bits: AtomicU32::new(KEY_BITS),
            current: RwLock::new(None),
            building: AtomicBool::new(false),
            unbuildable: AtomicBool::new(false),
            backoff: Mutex::new(None),
            builds: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            from_directory: AtomicU64::new(0),
            from_sqlite: AtomicU64::new(0),
        }
    }
}

/// Clears `building` however a build ends, and records a build that did
/// not finish (it panicked) as a failure.
struct Building<'a> {
    state: &'a KeyState,
    /// `max(id)` of the snapshot that asked for the build.
    wanted: i64,
    finished: bool,
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!("key directory build for max(id) {} ended without a result", self.wanted);
            self.state.failed(self.wanted);
        }
        self.state.building.store(false, Ordering::Release);
    }
}

impl KeyState {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Cuts the keys of later builds to `bits` bits, so names collide.
    #[cfg(test)]
    pub(crate) fn set_key_bits(&self, bits: u32) {
        self.key_bits.store(bits, Ordering::Release);
    }

    /// Makes `d` the current directory, as a finished build does.
    #[cfg(test)]
    pub(crate) fn install(&self, d: Option<Arc<KeyDir>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = d;
    }

    pub(crate) fn current(&self) -> Option<Arc<KeyDir>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The directory a reader whose snapshot has `max_id` answers from (the
    /// current one, if it describes that snapshot; counted either way), and
    /// whether that snapshot is newer than the directory, so a build should
    /// start.
    pub(crate) fn for_snapshot(&self, max_id: i64) -> (Option<Arc<KeyDir>>, bool) {
        let current = self.current();
        let stale = current.as_ref().map_or(true, |d| d.max_id < max_id);
        let used = current.filter(|d| d.max_id == max_id);
        let counter = if used.is_some() {
            &self.from_directory
        } else {
            &self.from_sqlite
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (used, stale)
    }

    /// The counters and state for the STATUS line.
    pub(crate) fn stats(&self) -> KeyDirStats {
        let current = self.current();
        KeyDirStats {
            enabled: self.enabled(),
            paths: current.as_ref().map(|d| d.len()),
            max_id: current.as_ref().map(|d| d.max_id),
            building: self.building.load(Ordering::Acquire),
            unbuildable: self.unbuildable.load(Ordering::Acquire),
            builds: self.builds.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            from_directory: self.from_directory.load(Ordering::Relaxed),
            from_sqlite: self.from_sqlite.load(Ordering::Relaxed),
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Option<Backoff>> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failed build asked for by snapshot `wanted`.
    fn failed(&self, wanted: i64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut b = self.backoff();
        *b = Some(Backoff::after(*b, wanted, Instant::now()));
    }

    /// Starts a build for a snapshot with `max(id)` `wanted`, on its own
    /// thread and connection, unless one runs, that snapshot is backing off
    /// after a failure, or no directory can be built.
    pub(crate) fn rebuild(
        self: &Arc<Self>,
        wanted: i64,
        open: impl FnOnce() -> rusqlite::Result<Connection> + Send + 'static,
        db: PathBuf,
    ) {
        if self.unbuildable.load(Ordering::Acquire) || self.backoff().is_some_and(|b| b.holds(wanted, Instant::now())) {
            return;
        }
        if self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let shown = db.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("key-dir".into())
            .spawn(move || me.build(wanted, open, &db));
        if let Err(e) = spawned {
            tracing::warn!("index {shown}: starting the key directory build: {e}");
            self.failed(wanted);
            self.building.store(false, Ordering::Release);
        }
    }

    /// One build, on the builder thread.
    fn build(&self, wanted: i64, open: impl FnOnce() -> rusqlite::Result<Connection>, db: &std::path::Path) {
        let mut guard = Building {
            state: self,
            wanted,
            finished: false,
        };
        let t0 = Instant::now();
        let bits = self.key_bits.load(Ordering::Acquire);
        match open().and_then(|c| KeyDir::build(&c, bits)) {
            Ok(Some(d)) => {
                tracing::info!(
                    "index {}: key directory of {} paths built in {:.3}s ({} bytes)",
                    db.display(),
                    d.len(),
                    t0.elapsed().as_secs_f64(),
                    d.bytes()
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(d));
                *self.backoff() = None;
                self.builds.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {
                tracing::info!("index {}: row ids above 32 bits, no key directory", db.display());
                self.unbuildable.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!("index {}: building the key directory: {e}", db.display());
                self.failed(wanted);
            }
        }
        guard.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn paths_table(c: &Connection) {
        c.execute_batch("CREATE TABLE paths (id INTEGER PRIMARY KEY, base_name TEXT NOT NULL UNIQUE);")
            .unwrap();
    }

    #[test]
    fn lookup_finds_every_built_name_and_refuses_others() {
        let c = Connection::open_in_memory().unwrap();
        paths_table(&c);
        for i in 1..=1000 {
            c.execute("INSERT INTO paths (base_name) VALUES (?1)", [format!("{i:032}-p")])
                .unwrap();
        }
        let d = KeyDir::build(&c, KEY_BITS).unwrap().unwrap();
        assert_eq!(d.max_id, 1000);
        for i in 1..=1000 {
            assert_eq!(d.lookup(format!("{i:032}-p").as_bytes()), Some(i), "{i}");
            assert_eq!(d.lookup(format!("{i:032}-q").as_bytes()), None, "{i}");
        }
        let names: Vec<String> = (0..=1001).map(|i| format!("{i:032}-p")).collect();
        let many = d.lookup_many(names.iter().map(String::as_bytes));
        let want: Vec<Option<i64>> = (0..=1001).map(|i| (1..=1000).contains(&i).then_some(i)).collect();
        assert_eq!(many, want);
    }

    #[test]
    fn empty_index_builds_an_empty_directory() {
        let c = Connection::open_in_memory().unwrap();
        paths_table(&c);
        let d = KeyDir::build(&c, KEY_BITS).unwrap().unwrap();
        assert_eq!((d.max_id, d.lookup(b"x")), (0, None));
    }

    /// The key is the keyed hash's first 16 bytes, cut to its top bits.
    #[test]
    fn keys_are_the_keyed_hash_cut_to_their_bits() {
        let full = KeyHash::new(128).unwrap();
        let h = blake3::keyed_hash(&full.key, b"name");
        let mut first = [0u8; 16];
        first.copy_from_slice(&h.as_bytes()[..16]);
        let k = u128::from_le_bytes(first);
        assert_eq!(full.of(b"name"), ((k >> 64) as u64, k as u64));
        for (bits, hi_mask) in [(0, 0), (3, 0xe000_0000_0000_0000), (64, u64::MAX)] {
            let cut = KeyHash {
                key: full.key,
                mask: KeyHash::new(bits).unwrap().mask,
            };
            assert_eq!(cut.of(b"name"), ((k >> 64) as u64 & hi_mask, 0), "{bits} bits");
        }
    }

    /// With a 2-bit key most names share a key: every built name is found
    /// (some row with its key), and a lookup answers only ids that exist.
    #[test]
    fn short_keys_collide_and_still_find_every_name() {
        let c = Connection::open_in_memory().unwrap();
        paths_table(&c);
        for i in 1..=50 {
            c.execute("INSERT INTO paths (base_name) VALUES (?1)", [format!("{i:032}-p")])
                .unwrap();
        }
        let d = KeyDir::build(&c, 2).unwrap().unwrap();
        let ids: Vec<Option<i64>> = (1..=50).map(|i| d.lookup(format!("{i:032}-p").as_bytes())).collect();
        assert!(
            ids.iter().all(|id| id.is_some_and(|id| (1..=50).contains(&id))),
            "{ids:?}"
        );
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert!(distinct.len() <= 4, "2-bit keys name at most 4 rows: {distinct:?}");
    }

    fn wait_idle(s: &KeyState) {
        let t0 = Instant::now();
        while s.building.load(Ordering::Acquire) {
            assert!(t0.elapsed() < Duration::from_secs(10), "still building after 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn index_of(names: &[&str]) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        paths_table(&c);
        for n in names {
            c.execute("INSERT INTO paths (base_name) VALUES (?1)", [n]).unwrap();
        }
        c
    }

    /// A build that panics clears `building` (the drop guard) and counts as a
    /// failure; the next snapshot builds.
    #[test]
    fn a_panicking_build_clears_building_and_counts_a_failure() {
        let s = Arc::new(KeyState::default());
        s.enable();
        s.rebuild(1, || panic!("deliberate panic in a key directory build"), "db".into());
        wait_idle(&s);
        assert_eq!((s.stats().failures, s.stats().builds), (1, 0));
        s.rebuild(2, || Ok(index_of(&["a", "b"])), "db".into());
        wait_idle(&s);
        let st = s.stats();
        assert_eq!(
            (st.paths, st.max_id, st.builds, st.failures),
            (Some(2), Some(2), 1, 1),
            "{st}"
        );
    }

    /// A failed build is not tried again for the same or an older snapshot
    /// until its back-off ends; a newer snapshot tries at once.
    #[test]
    fn a_failed_build_backs_off_per_snapshot() {
        let s = Arc::new(KeyState::default());
        s.enable();
        let tries = Arc::new(AtomicUsize::new(0));
        let attempt = |max: i64| {
            let t = tries.clone();
            s.rebuild(
                max,
                move || {
                    t.fetch_add(1, Ordering::SeqCst);
                    Err(rusqlite::Error::InvalidQuery)
                },
                "db".into(),
            );
            wait_idle(&s);
            tries.load(Ordering::SeqCst)
        };
        assert_eq!(attempt(5), 1);
        assert_eq!(attempt(5), 1, "retried the same snapshot at once");
        assert_eq!(attempt(4), 1, "retried for an older snapshot");
        assert_eq!(attempt(6), 2, "a newer snapshot did not try");
        assert_eq!(attempt(6), 2);
        std::thread::sleep(RETRY_FIRST + Duration::from_millis(50));
        assert_eq!(attempt(6), 3, "not retried after the back-off");
        assert_eq!(attempt(6), 3, "second back-off not applied");
        assert_eq!(s.stats().failures, 3);
        // Success clears the back-off.
        s.rebuild(7, || Ok(index_of(&["a"])), "db".into());
        wait_idle(&s);
        assert!(s.backoff().is_none());
        assert_eq!(s.stats().builds, 1);
    }

    #[test]
    fn back_off_doubles_per_failure_in_a_row_up_to_its_bound() {
        let now = Instant::now();
        let mut b = None;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let next = Backoff::after(b, 9, now);
            waits.push(next.until - now);
            b = Some(next);
        }
        assert_eq!(waits[..4], [1, 2, 4, 8].map(Duration::from_secs));
        assert_eq!(waits[11], RETRY_MAX);
        // A newer snapshot starts again at the first wait.
        assert_eq!(Backoff::after(b, 10, now).until - now, RETRY_FIRST);
        assert!(b.unwrap().holds(9, now) && b.unwrap().holds(3, now) && !b.unwrap().holds(10, now));
    }

    /// Row ids above 32 bits: no directory, and no build is tried again.
    #[test]
    fn ids_above_32_bits_stop_building_for_good() {
        let s = Arc::new(KeyState::default());
        s.enable();
        let tries = Arc::new(AtomicUsize::new(0));
        for max in [1 << 33, (1 << 33) + 1] {
            let t = tries.clone();
            s.rebuild(
                max,
                move || {
                    t.fetch_add(1, Ordering::SeqCst);
                    let c = index_of(&[]);
                    c.execute("INSERT INTO paths (id, base_name) VALUES (?1, 'x')", [1i64 << 33])?;
                    Ok(c)
                },
                "db".into(),
            );
            wait_idle(&s);
        }
        let st = s.stats();
        assert_eq!(
            (tries.load(Ordering::SeqCst), st.unbuildable, st.failures),
            (1, true, 0)
        );
        assert!(st.to_string().contains("row ids above 32 bits"), "{st}");
    }

    #[test]
    fn stats_read_as_the_status_line_says() {
        let mut st = KeyDirStats::default();
        assert_eq!(st.to_string(), "key directory off");
        st.enabled = true;
        st.building = true;
        assert_eq!(
            st.to_string(),
            "key directory: none yet, building, 0 built, 0 failed; 0 reader snapshots answered from it, 0 from SQLite"
        );
        st = KeyDirStats {
            enabled: true,
            paths: Some(22),
            max_id: Some(22),
            builds: 2,
            failures: 1,
            from_directory: 40,
            from_sqlite: 3,
            ..Default::default()
        };
        assert_eq!(
            st.to_string(),
            "key directory: 22 paths, 2 built, 1 failed; 40 reader snapshots answered from it, 3 from SQLite"
        );
    }
}
