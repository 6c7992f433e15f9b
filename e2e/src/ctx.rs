//! The suite's shared world: the work directory (a tmpfs, visible as `/e2e`
//! inside every chroot), the provisioned root file systems and the binaries
//! under test.

use crate::mounts::{self, Mounted};
use crate::rootfs::{Rootfs, CHROOT_WORK};
use anyhow::{Context, Result};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

pub struct Ctx {
    /// Host path of the work directory.
    pub work: PathBuf,
    /// Root file systems that could be opened, oldest Nix first.
    pub roots: Vec<Rootfs>,
    /// `/e2e/bin/snix-lower-store` inside the chroots, if the binary exists.
    pub ours: Option<String>,
    counter: Cell<u32>,
    /// What our daemon served, hashed before it first did (read-only check).
    pub readonly: RefCell<crate::readonly::Registry>,
    /// The image of each Nix version's parity/overlay lower store, made once
    /// (by label) on first use: see [`crate::images::base`].
    pub base_images: RefCell<std::collections::BTreeMap<String, std::result::Result<crate::images::Image, String>>>,
    /// CI=true: a missing tool or kernel feature fails instead of skipping.
    pub ci: bool,
    /// Real snix binaries inside the chroots, when given (`--snix-dir`):
    /// they enable the `ours-snix` flavour and the `snix-nix-daemon` checks.
    pub snix: Option<SnixBins>,
    // Dropped last (declared last): unmounts chroot binds, then the tmpfs.
    _mounts: Vec<Mounted>,
}

/// Where the snix binaries are on the host (`snix-store`, snix's `nix-daemon`).
pub struct SnixHost {
    pub store: PathBuf,
    pub nix_daemon: PathBuf,
}

/// The snix binaries as the chroots see them (copied under `/e2e/bin`).
pub struct SnixBins {
    pub store: String,
    pub nix_daemon: String,
}

impl Ctx {
    /// Creates the work directory and wires it, /proc, /dev and a scratch
    /// /nix into every root file system.
    pub fn new(work: PathBuf, tmpfs: bool, mut roots: Vec<Rootfs>, ours_host: Option<&Path>, ci: bool) -> Result<Ctx> {
        let mut mounts = Vec::new();
        if tmpfs {
            mounts.push(mounts::tmpfs(&work, "6g")?);
        } else {
            std::fs::create_dir_all(&work)?;
        }
        std::fs::create_dir_all(work.join("bin"))?;
        for fs in roots.iter_mut() {
            mounts.push(mounts::bind(Path::new("/proc"), &fs.host_path("/proc"))?);
            mounts.push(mounts::bind(Path::new("/dev"), &fs.host_path("/dev"))?);
            mounts.push(mounts::bind(Path::new("/dev/pts"), &fs.host_path("/dev/pts"))?);
            mounts.push(mounts::bind(&work, &fs.host_path(CHROOT_WORK))?);
            // A scratch /nix per root file system: the default local store
            // (root=/) of every chroot starts empty and vanishes with the run.
            mounts.push(mounts::tmpfs(&fs.host_path("/nix"), "2g")?);
            fs.detect_version()?;
            println!("# {}: Nix {} ({})", fs.suite, fs.version, fs.dir.display());
        }
        roots.sort_by_key(|r| version_key(&r.version));
        let ours = match ours_host {
            Some(bin) => {
                let dest = work.join("bin/snix-lower-store");
                std::fs::copy(bin, &dest)
                    .with_context(|| format!("cannot copy {} into the work dir", bin.display()))?;
                Some(format!("{CHROOT_WORK}/bin/snix-lower-store"))
            }
            None => None,
        };
        let me = std::env::current_exe()?;
        std::fs::copy(&me, work.join("bin/snix-lower-store-e2e"))?;
        mounts.reverse();
        Ok(Ctx {
            work,
            roots,
            ours,
            counter: Cell::new(0),
            readonly: RefCell::default(),
            base_images: RefCell::default(),
            ci,
            snix: None,
            _mounts: mounts,
        })
    }

    /// Copies the snix binaries into the work dir; sets [`Ctx::snix`].
    pub fn install_snix(&mut self, host: &SnixHost) -> Result<()> {
        let copy = |from: &Path, name: &str| -> Result<String> {
            std::fs::copy(from, self.work.join("bin").join(name))
                .with_context(|| format!("cannot copy {} into the work dir", from.display()))?;
            Ok(format!("{CHROOT_WORK}/bin/{name}"))
        };
        self.snix = Some(SnixBins {
            store: copy(&host.store, "snix-store")?,
            nix_daemon: copy(&host.nix_daemon, "snix-nix-daemon")?,
        });
        Ok(())
    }
}

impl Ctx {
    /// Host path of a path under `/e2e` inside the chroots.
    pub fn host(&self, inside: &str) -> PathBuf {
        let rel = inside
            .strip_prefix(CHROOT_WORK)
            .unwrap_or_else(|| panic!("{inside} is not under {CHROOT_WORK}"));
        self.work.join(rel.trim_start_matches('/'))
    }

    /// A new, empty, uniquely named directory under `/e2e`; returns its
    /// in-chroot path.
    pub fn fresh_dir(&self, prefix: &str) -> Result<String> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let inside = format!("{CHROOT_WORK}/{prefix}-{n}");
        std::fs::create_dir_all(self.host(&inside))?;
        Ok(inside)
    }

    /// Writes a file under `/e2e` (host side), creating parents.
    pub fn write(&self, inside: &str, contents: &[u8]) -> Result<()> {
        let p = self.host(inside);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, contents).with_context(|| format!("cannot write {}", p.display()))
    }

    /// Writes an executable script under `/e2e`.
    pub fn write_script(&self, inside: &str, body: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.write(inside, body.as_bytes())?;
        std::fs::set_permissions(self.host(inside), std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }
}

fn version_key(v: &str) -> Vec<u32> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}
