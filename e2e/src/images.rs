//! Lower images for the suite, the one place that makes and mounts them:
//! `scripts/mk-lower-image` (run on the host, its `nix`/`nix-store` in a
//! chroot against a `local?root=` store) makes the directory form, an image
//! root laid out as a chroot store's (`<root>/nix/store/<objects>`, the lower
//! dir, and `<root>/.snix-lower-store/{registration,index,id}` outside the
//! store dir) and, when asked, the erofs file of that root; [`mount`] puts
//! either form, read-only, on a mount point inside the chroot, whose
//! `nix/store` is then the lower dir ([`lower_dir`]).
//!
//! Invariants: every image is made in a directory that did not exist and is
//! never written afterwards; it is registered for the read-only check when
//! made (the whole image root, index included, walked as a lower dir; the
//! erofs file by its SHA-256), so "before" is always taken before our daemon
//! first opens it. Nothing of the image but store objects is in its lower
//! dir, so no whiteout or other help is needed to keep `.snix-lower-store`
//! out of a local-overlay store's merged view.
//! The image of a fixture (every path of the parity and local-overlay lower
//! store) is made once per Nix version and shared ([`base`]): it is immutable,
//! so sharing it between scenarios cannot couple them.

use crate::ctx::Ctx;
use crate::daemons::Kind;
use crate::fixture::Fixture;
use crate::mounts::{self, Mounted};
use crate::rootfs::{capture, Rootfs};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::process::Command;

/// The script under test, written into the work dir's `bin`.
const SCRIPT: &str = include_str!("../../scripts/mk-lower-image");

/// What the image's index is built from (`mk-lower-image --index-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexFrom {
    /// `nix path-info --json --recursive`: signatures, `ca`, `ultimate` and
    /// registration times kept (the script's default).
    PathInfo,
    /// `nix-store --dump-db` only: `ca` only where `build-index` proves it.
    Registration,
}

/// The store dir every image of the suite is made for.
pub const STORE_DIR: &str = "/nix/store";

/// The image's metadata directory, in the image root beside `nix/`.
pub const METADATA_DIR: &str = ".snix-lower-store";

/// The lower dir of an image whose root is (or is mounted on) `root`.
pub fn lower_dir(root: &str) -> String {
    format!("{root}{STORE_DIR}")
}

/// An image made by the script (paths inside the chroot).
#[derive(Debug, Clone)]
pub struct Image {
    /// The directory form: the image root (objects in [`lower_dir`], the
    /// index in [`METADATA_DIR`]).
    pub dir: String,
    /// The erofs file of the image root, when one was made.
    pub erofs: Option<String>,
    /// [`metadata_digest`] of the metadata directory when made.
    pub metadata: String,
}

/// What a store to make an image of is, for the script.
pub struct Source<'a> {
    /// `local?root=…` URL of the store, for the chroot's Nix.
    pub url: &'a str,
    /// Its store directory inside the chroot (`<root>/nix/store`).
    pub store_dir: &'a str,
    /// Root store paths (their closure goes in the image).
    pub roots: &'a [String],
}

/// Runs `mk-lower-image -o <out>` with `fs`'s Nix; `erofs` also makes
/// `<out>.erofs` (the caller checks [`erofs_unavailable`] first). Registers
/// what it made for the read-only check.
pub fn make(ctx: &Ctx, fs: &Rootfs, src: &Source, out: &str, erofs: bool, from: IndexFrom) -> Result<Image> {
    let script = "/e2e/bin/mk-lower-image";
    ctx.write_script(script, SCRIPT)?;
    let mut cmd = Command::new("bash");
    cmd.env_clear();
    for (k, v) in fs.command(&["true"]).get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let from = match from {
        IndexFrom::PathInfo => "path-info",
        IndexFrom::Registration => "registration",
    };
    cmd.env("SNIX_LOWER_STORE_BIN", ctx.host("/e2e/bin/snix-lower-store"))
        .arg(ctx.host(script))
        .arg("-o")
        .arg(ctx.host(out))
        .arg("--nix-cmd-prefix")
        .arg(format!("chroot {}", fs.dir.display()))
        .args(["--store", src.url, "--index-from", from])
        .arg("--real-store-dir")
        .arg(ctx.host(src.store_dir));
    if !erofs {
        cmd.arg("--no-erofs");
    }
    cmd.arg("--").args(src.roots);
    let made = capture(&mut cmd)?.ok().context("mk-lower-image failed")?;
    if from == "path-info" && made.stderr().contains("note:") {
        bail!("mk-lower-image fell back to the registration: {}", made.stderr().trim());
    }
    for f in ["index", "id", "registration"] {
        if !ctx.host(&format!("{out}/{METADATA_DIR}/{f}")).is_file() {
            bail!("mk-lower-image made no {out}/{METADATA_DIR}/{f}");
        }
    }
    let lower = lower_dir(out);
    if !ctx.host(&lower).is_dir() || ctx.host(&format!("{lower}/{METADATA_DIR}")).symlink_metadata().is_ok() {
        bail!("mk-lower-image did not put the objects alone in {lower} (the metadata belongs in {out}/{METADATA_DIR})");
    }
    let metadata = metadata_digest(&ctx.host(&format!("{out}/{METADATA_DIR}")))?;
    let file = format!("{out}.erofs");
    let erofs = if erofs {
        if !ctx.host(&file).is_file() {
            bail!("mk-lower-image made no {file}: {}", made.stderr().trim());
        }
        Some(file)
    } else {
        None
    };
    let mut reg = ctx.readonly.borrow_mut();
    reg.serving(&ctx.host(out), None);
    if let Some(f) = &erofs {
        reg.serving_file(&ctx.host(f));
    }
    Ok(Image {
        dir: out.to_string(),
        erofs,
        metadata,
    })
}

/// Names, lengths and contents of the files in an image's metadata
/// directory (host path), in one SHA-256: the same for the directory form
/// and its erofs mount (unlike a walk, which sees erofs's owners and mtimes).
pub fn metadata_digest(dir: &std::path::Path) -> Result<String> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort();
    let mut h = Sha256::new();
    for n in names {
        let p = dir.join(&n);
        let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        h.update(n.as_encoded_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The image of `fx`'s whole store made with `fs`'s Nix (index from `nix
/// path-info`, erofs when available), once per Nix version: the lower layer
/// of the image flavours of the parity and local-overlay scenarios.
pub fn base(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<Image> {
    let mut cache = ctx.base_images.borrow_mut();
    let made = cache.entry(fs.label.clone()).or_insert_with(|| {
        let out = format!("/e2e/image-base-{}", fs.suite);
        let src = Source {
            url: &fx.local_url(),
            store_dir: &fx.store_dir(),
            roots: &fx.all,
        };
        make(ctx, fs, &src, &out, erofs_unavailable().is_none(), IndexFrom::PathInfo).map_err(|e| format!("{e:#}"))
    });
    made.clone().map_err(anyhow::Error::msg)
}

/// Why no erofs image can be made or mounted here, if so.
pub fn erofs_unavailable() -> Option<String> {
    let found = capture(Command::new("sh").args(["-c", "command -v mkfs.erofs"])).ok()?;
    if !found.success() {
        return Some("mkfs.erofs is not installed (Debian: erofs-utils); only the directory form was tested".into());
    }
    let listed = |t: &str| t.lines().any(|l| l.split_whitespace().last() == Some("erofs"));
    if listed(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default()) {
        return None;
    }
    let loaded = capture(Command::new("modprobe").arg("erofs")).is_ok_and(|o| o.success());
    if !loaded {
        return Some("the kernel has no erofs (not in /proc/filesystems, modprobe erofs failed)".into());
    }
    None
}

/// Mounts `img`'s root read-only on `target` (inside the chroot) in the form
/// `kind` serves: the directory as a read-only bind mount, the erofs file as
/// a read-only loop mount. The lower dir is then [`lower_dir`]`(target)`.
pub fn mount(fs: &Rootfs, kind: Kind, img: &Image, target: &str) -> Result<Mounted> {
    match kind {
        Kind::OursErofs => {
            let file = img
                .erofs
                .as_deref()
                .with_context(|| format!("{} has no erofs file", img.dir))?;
            mounts::erofs(fs, file, target)
        }
        Kind::OursImage => mounts::bind_ro(fs, &img.dir, target),
        _ => bail!("{} serves no image", kind.name()),
    }
}

/// Makes an erofs file of the image root `dir` with plain options (a
/// damaged copy's image, never served as a whole by our daemon).
pub fn mkfs_erofs(ctx: &Ctx, dir: &str, file: &str) -> Result<()> {
    capture(
        Command::new("mkfs.erofs")
            .args(["--quiet", "-T1", "--all-root"])
            .arg(ctx.host(file))
            .arg(ctx.host(dir)),
    )?
    .ok()
    .context("mkfs.erofs failed")?;
    Ok(())
}
