//! `LowerDir`: the physical directory holding the lower store's objects
//! (what OverlayFS gets as `lowerdir=`). Only validated store paths are joined
//! onto it, and nothing here ever writes.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::drv::{parse_outputs, DrvOutput, DrvParseError};
use crate::nar::nar_hash;
use crate::{NarHash, StorePath};

/// A derivation larger than this is not a derivation Nix wrote.
const MAX_DRV_SIZE: u64 = 64 << 20;

/// Why the lower dir, or an object in it, cannot be used. The texts end up
/// in error replies and import reports; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("lower dir {}: {source}; is the lower store mounted?", root.display())]
    Unopenable { root: PathBuf, source: io::Error },
    #[error("lower dir {} is not a directory", root.display())]
    NotADirectory { root: PathBuf },
    #[error("lower dir {} cannot be listed: {source}", root.display())]
    Unlistable { root: PathBuf, source: io::Error },
    #[error(
        "the lower dir {} is no longer the file system it was at start (device {was:#x}, now {now:#x}): \
         the lower mount was unmounted or replaced; remount it and restart snix-lower-store",
        root.display()
    )]
    Replaced { root: PathBuf, was: u64, now: u64 },
    #[error("the lower dir {} is gone ({source}); remount it and restart snix-lower-store", root.display())]
    Gone { root: PathBuf, source: io::Error },
    #[error("not present in the lower dir {}", root.display())]
    Absent { root: PathBuf },
    #[error("cannot be read in the lower dir {}: {source}", root.display())]
    Unreadable { root: PathBuf, source: io::Error },
    #[error("cannot open the derivation in the lower dir: {0}")]
    DrvOpen(io::Error),
    #[error("cannot read the derivation: {0}")]
    DrvRead(io::Error),
    #[error("derivation is larger than 64 MiB")]
    DrvTooLarge,
    #[error(transparent)]
    DrvParse(#[from] DrvParseError),
}

/// For callers that collect problems as text (the importers' reports).
impl From<LowerError> for String {
    fn from(e: LowerError) -> String {
        e.to_string()
    }
}

/// The physical lower directory (the overlay's lowerdir), opened read-only:
/// where store objects are looked up, hashed and read. Clones share the
/// liveness state.
#[derive(Clone, Debug)]
pub struct LowerDir {
    root: PathBuf,
    /// Device of the root when opened: a different device later means the
    /// lower mount went away or was replaced.
    dev: u64,
    /// When the root was last seen alive (ms since `epoch`), so a busy
    /// daemon stats it at most every `ALIVE_FOR` rather than per request.
    alive_at: std::sync::Arc<std::sync::atomic::AtomicU64>,
    epoch: std::time::Instant,
}

/// How long a successful liveness check is trusted.
const ALIVE_FOR_MS: u64 = 100;

impl LowerDir {
    /// Open the lower dir, checking it is a readable directory.
    pub fn open(root: &Path) -> Result<Self, LowerError> {
        let meta = fs::metadata(root).map_err(|source| LowerError::Unopenable {
            root: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(LowerError::NotADirectory {
                root: root.to_path_buf(),
            });
        }
        fs::read_dir(root).map_err(|source| LowerError::Unlistable {
            root: root.to_path_buf(),
            source,
        })?;
        Ok(LowerDir {
            root: root.to_path_buf(),
            dev: meta.dev(),
            alive_at: Default::default(),
            epoch: std::time::Instant::now(),
        })
    }

    /// Is the lower dir still the one we opened? An unmounted or replaced
    /// lower mount must never be answered for: Nix would register paths
    /// whose files are gone.
    /// A success is trusted for 100 ms: a lower mount that disappears is
    /// noticed within that, at one `stat` per 100 ms however busy we are.
    pub fn check_alive(&self) -> Result<(), LowerError> {
        use std::sync::atomic::Ordering;
        // Stored as ms + 1 so that 0 means "never checked".
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.alive_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < ALIVE_FOR_MS {
            return Ok(());
        }
        match fs::metadata(&self.root) {
            Ok(m) if m.dev() == self.dev && m.is_dir() => {
                self.alive_at.store(now, Ordering::Relaxed);
                Ok(())
            }
            Ok(m) => Err(LowerError::Replaced {
                root: self.root.clone(),
                was: self.dev,
                now: m.dev(),
            }),
            Err(source) => Err(LowerError::Gone {
                root: self.root.clone(),
                source,
            }),
        }
    }

    /// The directory as opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object of `p` lives. `p` is a validated base name, which
    /// cannot contain '/', so this never leaves the lower dir.
    pub fn object(&self, p: &StorePath) -> PathBuf {
        self.root.join(p.base_name())
    }

    pub fn check_present(&self, p: &StorePath) -> Result<(), LowerError> {
        match fs::symlink_metadata(self.object(p)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LowerError::Absent {
                root: self.root.clone(),
            }),
            Err(source) => Err(LowerError::Unreadable {
                root: self.root.clone(),
                source,
            }),
        }
    }

    /// NAR hash and size of the object of `p`, read from the lower dir.
    pub fn nar_hash(&self, p: &StorePath) -> io::Result<(NarHash, u64)> {
        nar_hash(&self.object(p))
    }

    /// Re-hash the object of `p`: `None` if it has the recorded NAR hash and
    /// size, else what it has.
    pub fn content_mismatch(&self, p: &StorePath, hash: NarHash, size: u64) -> io::Result<Option<(NarHash, u64)>> {
        let (h, s) = self.nar_hash(p)?;
        Ok((h != hash || s != size).then_some((h, s)))
    }

    /// Read a `.drv` from the lower dir and parse its outputs.
    pub fn read_derivation_outputs(&self, p: &StorePath) -> Result<Vec<DrvOutput>, LowerError> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.object(p))
            .map_err(LowerError::DrvOpen)?;
        let mut bytes = Vec::new();
        f.take(MAX_DRV_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(LowerError::DrvRead)?;
        if bytes.len() as u64 > MAX_DRV_SIZE {
            return Err(LowerError::DrvTooLarge);
        }
        Ok(parse_outputs(&bytes)?)
    }
}
