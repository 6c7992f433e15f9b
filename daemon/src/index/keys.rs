//! `KeyDir`: an in-memory directory of the index's base names, so
//! IsValidPath, QueryValidPaths, QueryPathInfo and QueryReferrers do not
//! descend the `base_name` B-tree. At 1M paths that B-tree's leaves (60 MB)
//! do not fit the CPU caches, and a lookup touched two or three cold pages
//! through the mapped file; the bench's mixed load cost 1.2–1.5× more daemon
//! CPU per op at 1M paths than at 22k (README "Cost per request").
//!
//! Each path is a 128-bit key, the first 16 bytes of a BLAKE3 keyed hash of
//! its base name under a key drawn from the OS at each build, stored with
//! the path's row id, sorted, with a bucket table on the key's top bits:
//! 20.5 bytes per path (21 MB at 1M paths) of anonymous memory (huge pages
//! where the kernel gives them). A lookup is one hash and two or three
//! cache lines.
//!
//! Invariants:
//! - A directory describes the rows of one snapshot, identified by its
//!   `max(id)`: imports only insert rows, with increasing ids, and nothing
//!   deletes one, so two snapshots with the same `max(id)` hold the same
//!   paths. A reader uses the directory only when its own snapshot has that
//!   `max(id)`; otherwise it asks SQLite and a rebuild starts in the
//!   background, so a `serve` sees an import without a restart and never
//!   answers from a stale directory.
//! - A key absent from the directory is an exact "not valid". A key present
//!   answers "valid" (IsValidPath, QueryValidPaths) and names the row whose
//!   referrers are listed: wrong only if a name that is not valid has the
//!   128-bit keyed hash of one that is, at most n/2^128 per query for n
//!   paths (3·10^-33 at 1M), and not something a client can aim for, as
//!   the key is secret and new at each build. QueryPathInfo reads the row by
//!   id and compares the base name, so it is exact.
//! - Row ids above `u32::MAX` are not built into a directory (SQLite serves).

use rusqlite::Connection;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

fn io_err(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Mappings from this size on ask for transparent huge pages.
const HUGE_PAGE: usize = 2 << 20;

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

impl Entry {
    fn key(&self) -> (u64, u64) {
        (self.hi, self.lo)
    }
}

/// A fresh secret key for a directory's hash, from the OS.
fn random_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    let mut got = 0;
    while got < key.len() {
        // SAFETY: writes at most `key.len() - got` bytes into `key[got..]`.
        let n = unsafe { libc::getrandom(key[got..].as_mut_ptr().cast(), key.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            got += n as usize;
        }
    }
    Ok(key)
}

pub(crate) struct KeyDir {
    /// `max(id)` of the snapshot this was built from (0: no paths).
    pub(crate) max_id: i64,
    key: [u8; 32],
    /// Bucket of a key: `hi >> shift`.
    shift: u32,
    /// `entries[starts[b]..starts[b + 1]]` is bucket `b`, sorted by key.
    starts: Mapped<u32>,
    entries: Mapped<Entry>,
    /// Paths in the directory (`entries` may have unused slots after them).
    len: usize,
}

impl KeyDir {
    fn hash(key: &[u8; 32], base_name: &str) -> (u64, u64) {
        let h = blake3::keyed_hash(key, base_name.as_bytes());
        let b = h.as_bytes();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        (word(0), word(8))
    }

    /// The row id of the path with this base name's key, if any path has it.
    pub(crate) fn lookup(&self, base_name: &str) -> Option<i64> {
        let k = Self::hash(&self.key, base_name);
        self.find(k, self.bucket(k))
    }

    /// [`Self::lookup`] of each name, in order. The memory accesses of all
    /// lookups are issued stage by stage (bucket bounds, then both ends of
    /// each bucket, then the searches), so their cache misses overlap instead
    /// of following one another: at 1M paths a QueryValidPaths of 32 spent
    /// most of its time waiting on them, one lookup at a time.
    pub(crate) fn lookup_many<'a>(&self, base_names: impl Iterator<Item = &'a str>) -> Vec<Option<i64>> {
        let keys: Vec<(u64, u64)> = base_names.map(|n| Self::hash(&self.key, n)).collect();
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

    /// Paths in the directory.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory this directory holds.
    pub(crate) fn bytes(&self) -> usize {
        self.starts.len() * 4 + self.len * std::mem::size_of::<Entry>()
    }

    /// Reads every (id, base name) of the connection's current snapshot.
    /// `None` when an id does not fit 32 bits.
    fn build(c: &Connection) -> rusqlite::Result<Option<KeyDir>> {
        c.execute_batch("BEGIN")?;
        let out = Self::build_in_snapshot(c);
        let _ = c.execute_batch("COMMIT");
        out
    }

    fn build_in_snapshot(c: &Connection) -> rusqlite::Result<Option<KeyDir>> {
        let max_id: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM paths", [], |r| r.get(0))?;
        let Ok(max) = u32::try_from(max_id) else {
            return Ok(None);
        };
        let key = random_key().map_err(io_err)?;
        // Ids only grow and are never deleted: max(id) bounds the count.
        let mut entries = Mapped::<Entry>::zeroed(max as usize).map_err(io_err)?;
        let mut len = 0;
        // ORDER BY base_name reads the covering `base_name` index, not the rows.
        let mut st = c.prepare("SELECT id, base_name FROM paths ORDER BY base_name")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let id = u32::try_from(r.get::<_, i64>(0)?).map_err(|e| io_err(std::io::Error::other(e)))?;
            let (hi, lo) = Self::hash(&key, r.get_ref(1)?.as_str()?);
            let slot = entries
                .get_mut(len)
                .ok_or_else(|| io_err(std::io::Error::other("more paths than max(id)")))?;
            *slot = Entry { hi, lo, id };
            len += 1;
        }
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
            key,
            shift,
            starts,
            entries,
            len,
        }))
    }
}

/// A zeroed array in its own anonymous mapping, unmapped on drop, so the
/// directory's large arrays never pass through malloc: glibc raises its
/// mmap threshold to the size of any large block `free`d, after which every
/// thread's arena keeps up to twice that of freed memory resident (with a
/// `Vec`: RssAnon 34–56 MiB at 1M paths instead of 24; freezing the
/// threshold with `mallopt` instead made every larger buffer an `mmap`,
/// +40% CPU per op). Pages never written stay unallocated.
struct Mapped<T: Copy> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

// SAFETY: a `Mapped` owns its mapping like a `Box<[T]>`.
unsafe impl<T: Copy + Send> Send for Mapped<T> {}
// SAFETY: as above; shared access is read-only through `Deref`.
unsafe impl<T: Copy + Sync> Sync for Mapped<T> {}

impl<T: Copy> Mapped<T> {
    /// `len` zeroed elements; `T` must be valid as all-zero bytes (integers).
    fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| std::io::Error::other("key directory size overflows"))?;
        if bytes == 0 {
            return Ok(Mapped {
                ptr: std::ptr::NonNull::dangling(),
                len,
            });
        }
        // SAFETY: a fresh private anonymous mapping, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        if bytes >= HUGE_PAGE {
            // Best effort: fewer TLB misses per lookup where the kernel's
            // transparent huge pages are on for `madvise` (or always).
            // SAFETY: advice on the mapping just made.
            unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        }
        let ptr = std::ptr::NonNull::new(p.cast()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(Mapped { ptr, len })
    }
}

impl<T: Copy> std::ops::Deref for Mapped<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` zero-initialised elements, mapped until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for Mapped<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for Mapped<T> {
    fn drop(&mut self) {
        let bytes = self.len * std::mem::size_of::<T>();
        if bytes != 0 {
            // SAFETY: the mapping made in `zeroed`, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
        }
    }
}

/// The current directory of an index and its background builder.
#[derive(Default)]
pub(crate) struct KeyState {
    enabled: AtomicBool,
    current: RwLock<Option<Arc<KeyDir>>>,
    building: AtomicBool,
}

impl KeyState {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    pub(crate) fn current(&self) -> Option<Arc<KeyDir>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts a build on its own thread and connection unless one runs.
    pub(crate) fn rebuild(
        self: &Arc<Self>,
        open: impl FnOnce() -> rusqlite::Result<Connection> + Send + 'static,
        db: PathBuf,
    ) {
        if self.building.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("key-dir".into()).spawn(move || {
            let t0 = std::time::Instant::now();
            match open().and_then(|c| KeyDir::build(&c)) {
                Ok(Some(d)) => {
                    tracing::info!(
                        "index {}: key directory of {} paths built in {:.3}s ({} bytes)",
                        db.display(),
                        d.len(),
                        t0.elapsed().as_secs_f64(),
                        d.bytes()
                    );
                    *me.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(d));
                }
                Ok(None) => tracing::info!("index {}: row ids above 32 bits, no key directory", db.display()),
                Err(e) => tracing::warn!("index {}: building the key directory: {e}", db.display()),
            }
            me.building.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.building.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_every_built_name_and_refuses_others() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE paths (id INTEGER PRIMARY KEY, base_name TEXT NOT NULL UNIQUE);")
            .unwrap();
        for i in 1..=1000 {
            c.execute("INSERT INTO paths (base_name) VALUES (?1)", [format!("{i:032}-p")])
                .unwrap();
        }
        let d = KeyDir::build(&c).unwrap().unwrap();
        assert_eq!(d.max_id, 1000);
        for i in 1..=1000 {
            assert_eq!(d.lookup(&format!("{i:032}-p")), Some(i), "{i}");
            assert_eq!(d.lookup(&format!("{i:032}-q")), None, "{i}");
        }
        let names: Vec<String> = (0..=1001).map(|i| format!("{i:032}-p")).collect();
        let many = d.lookup_many(names.iter().map(String::as_str));
        let want: Vec<Option<i64>> = (0..=1001).map(|i| (1..=1000).contains(&i).then_some(i)).collect();
        assert_eq!(many, want);
    }

    #[test]
    fn empty_index_builds_an_empty_directory() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE paths (id INTEGER PRIMARY KEY, base_name TEXT NOT NULL UNIQUE);")
            .unwrap();
        let d = KeyDir::build(&c).unwrap().unwrap();
        assert_eq!((d.max_id, d.lookup("x")), (0, None));
    }
}
