//! The pool of idle read connections, and the thread that ends their read
//! snapshots on time.
//!
//! A reader keeps its read transaction open between queries (starting one
//! per statement costs more than the lookup), for at most
//! `READ_SNAPSHOT_MAX_AGE` of use. An idle reader is not used, so nothing
//! on the query path would end its snapshot; and a snapshot pins the WAL:
//! no checkpoint can copy frames committed after it back into the database
//! file, so after an import while serving the WAL would only grow.
//!
//! Invariant: a reader that sits in the pool with an open snapshot is seen
//! by a sweeper thread, which ends every snapshot older than
//! `READ_SNAPSHOT_MAX_AGE`; so no idle snapshot lives longer than twice
//! that. The sweeper runs only while some pooled reader has a snapshot
//! open (it exits when none has, and the next [`Pool::put`] of one starts
//! it again), so an idle daemon has no timer; under load it wakes once per
//! `READ_SNAPSHOT_MAX_AGE`, and the query path only adds a flag check to
//! the pool's existing lock.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::{Reader, READ_SNAPSHOT_MAX_AGE};

/// Idle readers, shared with their sweeper.
#[derive(Default)]
pub(super) struct Pool(Mutex<PoolState>);

#[derive(Default)]
struct PoolState {
    idle: Vec<Reader>,
    /// A sweeper thread is running (it clears this itself, under the lock,
    /// when it exits).
    sweeping: bool,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle reader, most recently used first.
    pub(super) fn take(&self) -> Option<Reader> {
        self.lock().idle.pop()
    }

    /// Returns `r` to the pool; starts the sweeper if `r` holds a snapshot
    /// and none runs.
    pub(super) fn put(self: &Arc<Self>, r: Reader) {
        let open = r.snapshot_since.is_some();
        let mut st = self.lock();
        st.idle.push(r);
        if !open || st.sweeping {
            return;
        }
        st.sweeping = true;
        drop(st);
        let pool = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("index-snapshots".into())
            .spawn(move || sweep(pool));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that ends idle read snapshots; they end at next use");
            self.lock().sweeping = false;
        }
    }

    /// How many readers are idle (tests).
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }
}

/// Every `READ_SNAPSHOT_MAX_AGE`, ends the idle readers' snapshots that are
/// at least that old; returns when none is left open or the pool is gone.
fn sweep(pool: Weak<Pool>) {
    loop {
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE);
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut st = pool.lock();
        let mut still_open = false;
        st.idle.retain_mut(|r| match r.snapshot_since {
            Some(t) if t.elapsed() >= READ_SNAPSHOT_MAX_AGE => end_snapshot(r),
            Some(_) => {
                still_open = true;
                true
            }
            None => true,
        });
        if !still_open {
            st.sweeping = false;
            return;
        }
    }
}

/// Ends `r`'s read transaction; `false` (the reader is dropped, the next
/// query opens a new one) if SQLite refuses.
fn end_snapshot(r: &mut Reader) -> bool {
    r.snapshot_since = None;
    r.keys_checked = false;
    r.keys = None;
    if r.conn.execute_batch("COMMIT").is_ok() {
        return true;
    }
    r.conn.execute_batch("ROLLBACK").is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::import::{import, ImportOptions};
    use super::super::{PathInfoIndex, INDEX_FILE};
    use super::*;
    use snix_lower_store_types::lower::LowerDir;
    use snix_lower_store_types::StoreDir;

    /// Several readers take snapshots, an import commits while they sit idle
    /// in the pool, and after a wait a writer's passive checkpoint copies
    /// every WAL frame back: no idle reader pins the WAL.
    #[test]
    fn idle_readers_release_their_snapshots_so_the_wal_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        let (lower_dir, state) = (d.path().join("lower"), d.path().join("state"));
        std::fs::create_dir(&state).unwrap();
        let sd = StoreDir::new("/nix/store").unwrap();
        let all = snix_lower_store_testkit::demo::generate(&lower_dir, &sd, 3, 20).unwrap();
        let lower = LowerDir::open(&lower_dir).unwrap();
        let (first, rest) = all.split_at(20);
        import(&state, &sd, &lower, first.to_vec(), ImportOptions::default()).unwrap();
        let idx = PathInfoIndex::open(&state, "/nix/store").unwrap();
        // Four readers in use at once, each with a snapshot, then idle.
        let together = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    idx.with_conn(|c| {
                        c.query_row("SELECT count(*) FROM paths", [], |r| r.get::<_, i64>(0))?;
                        together.wait();
                        Ok(())
                    })
                    .unwrap()
                });
            }
        });
        assert_eq!(idx.readers.idle_count(), 4);
        import(&state, &sd, &lower, rest.to_vec(), ImportOptions::default()).unwrap();
        std::thread::sleep(READ_SNAPSHOT_MAX_AGE * 3);
        let w = rusqlite::Connection::open(state.join(INDEX_FILE)).unwrap();
        let (busy, log, done): (i64, i64, i64) = w
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert!(log > 0, "the import wrote no WAL frame");
        assert_eq!(
            (busy, done),
            (0, log),
            "an idle reader kept the WAL from being checkpointed"
        );
        // The readers are still pooled and see the import.
        assert_eq!(idx.readers.idle_count(), 4);
        assert!(idx.is_valid(&rest[0].path).unwrap());
    }
}
