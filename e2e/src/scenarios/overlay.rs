//! Local-overlay scenarios: Nix's `local-overlay` store on a real OverlayFS
//! mount, with a lower store served by our daemon (`overlay-ours/…`), by our
//! daemon in gRPC mode (`overlay-ours-grpc/…`: our gRPC PathInfoService
//! server on the index, our daemon reading from it), by our daemon on an
//! image made by `scripts/mk-lower-image` (`overlay-ours-image/…`: the
//! directory form, bind-mounted read-only; `overlay-ours-erofs/…`: the erofs
//! form, loop-mounted read-only; either way the lowerdir is the image's
//! `nix/store`, its `.snix-lower-store` outside it; no import, no state dir)
//! or, as the baseline, by Nix's own daemon (`overlay-nix/…`). After every
//! scenario of an image flavour, the merged store has no `.snix-lower-store`
//! entry (and the upper layer no whiteout for one), and the mounted image's
//! `.snix-lower-store` is byte for byte what `mk-lower-image` made.
//!
//! Each scenario gets its own copy of the generated lower store, its own
//! daemon, its own upper layer and a scratch `/nix` in the chroot with the
//! overlay mounted on `/nix/store` (root `/`, so builds run without a
//! sandbox). When a scenario changes the lower store it does so with Nix
//! directly (`local?root=…`), the way an administrator would, and then lets
//! the daemon pick the change up: ours by re-importing (new state directory,
//! restart), Nix's daemon by reading its database. An image is never
//! changed: in the image flavours Nix changes the store the image was made
//! of, and the change arrives as a new image of it, mounted in place of the
//! old one under a fresh overlay mount (same lowerdir path, same upper
//! layer), as an administrator would roll out a new image. Two scenarios
//! differ there, and say so in a `note` line: `stale-file-handle` (a fresh
//! overlay mount per lower change leaves no stale handle, so the sequence
//! must succeed without `remount-hook` too) and `verify` (the damage is a
//! damaged copy of the image, mounted in its place, never the image).

use super::{normalize_json, tree_hash};
use crate::ctx::Ctx;
use crate::daemons::{self, Kind, Lower};
use crate::fixture::{self, Fixture};
use crate::mounts::{self, Mounted, OverlaySpec};
use crate::report::{tagged, Report};
use crate::rootfs::{host, Output, Rootfs};
use anyhow::{bail, ensure, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

pub const NAMES: &[&str] = &[
    "overlay-ours/check-mount",
    "overlay-ours/check-post-init",
    "overlay-ours/add-lower",
    "overlay-ours/build",
    "overlay-ours/delete-duplicate",
    "overlay-ours/delete-refs",
    "overlay-ours/gc",
    "overlay-ours/optimise",
    "overlay-ours/redundant-add",
    "overlay-ours/verify",
    "overlay-ours/bad-uris",
    "overlay-ours/remount",
    "overlay-ours/stale-file-handle",
    "overlay-ours/store-url",
    "overlay-ours/ca-realisation",
];

type Scenario = fn(&Overlay) -> Result<()>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("check-mount", check_mount),
    ("check-post-init", check_post_init),
    ("add-lower", add_lower),
    ("build", build),
    ("delete-duplicate", delete_duplicate),
    ("delete-refs", delete_refs),
    ("gc", gc),
    ("optimise", optimise),
    ("redundant-add", redundant_add),
    ("verify", verify),
    ("bad-uris", bad_uris),
    ("remount", remount),
    ("stale-file-handle", stale_file_handle),
    ("store-url", store_url),
    ("ca-realisation", ca_realisation),
];

/// Report names of one flavour's scenarios (`overlay-<short>/…`).
pub fn flavoured(name: &str, kind: Kind) -> String {
    name.replacen("overlay-ours/", &format!("overlay-{}/", kind.short()), 1)
}

/// What an image flavour does differently in a scenario, said in a `note`.
fn image_note(name: &str) -> Option<&'static str> {
    match name {
        "stale-file-handle" => Some(
            "image flavour: each lower change is a new image under a fresh overlay mount, which leaves no stale \
             handle; the sequence must succeed without remount-hook as with it (the ESTALE half applies to a \
             lower dir changed in place only)",
        ),
        "verify" => Some(
            "image flavour: the damage is done to copies of the image mounted in its place, never to the image: \
             a copy missing a .drv is refused by our daemon's start check (naming it), so Nix's verify never sees \
             that; in a copy with two files overwritten at the same length (which the start check's kind and size \
             sample cannot see) Nix's verify reports the modified one and not the lower-only one, as for a lower \
             dir",
        ),
        _ => None,
    }
}

pub fn run(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, with_ours: bool, report: &mut Report) {
    let hook = "/e2e/bin/remount-hook";
    if let Err(e) = ctx.write_script(hook, "#!/bin/sh\nexec mount -o remount \"$1\"\n") {
        report.fail(&tagged("overlay/setup", &fs.label), &format!("{e:#}"));
        return;
    }
    let mut kinds = vec![];
    if with_ours {
        kinds.extend(Kind::ours(ctx.snix.is_some()));
    }
    kinds.push(Kind::Nix);
    for kind in kinds {
        let group = format!("overlay-{}", kind.short());
        if kind == Kind::OursErofs {
            if let Some(why) = crate::images::erofs_unavailable() {
                let name = tagged(&format!("{group}/setup"), &fs.label);
                if report.wanted(&format!("{group}/")) {
                    report.setup_problem(&name, &why, ctx.ci);
                }
                continue;
            }
        }
        for (name, f) in SCENARIOS {
            if kind == Kind::Nix && *name == "store-url" {
                continue;
            }
            let full = tagged(&format!("{group}/{name}"), &fs.label);
            let ran = report.wanted(&full);
            report.run(&full, || {
                let ov = Overlay::setup(ctx, fs, fx, kind, name).context("overlay setup")?;
                f(&ov)?;
                match kind.image() {
                    true => ov.metadata_outside_store(),
                    false => Ok(()),
                }
            });
            if let Some(n) = image_note(name).filter(|_| ran && kind.image()) {
                report.note(&full, n);
            }
        }
    }
}

/// One mounted local-overlay store and its lower store daemon.
pub struct Overlay<'a> {
    ctx: &'a Ctx,
    fs: &'a Rootfs,
    fx: &'a Fixture,
    /// Scenario directory under /e2e.
    dir: String,
    lower: std::cell::RefCell<Lower>,
    upper: String,
    /// The OverlayFS mount on `/nix/store` (taken down and put back when an
    /// image flavour's lower image is replaced).
    overlay: std::cell::RefCell<Option<Mounted>>,
    /// The `local-overlay://` URL (check-mount on).
    url: String,
    hook: String,
    mounts: Vec<Mounted>,
}

impl Drop for Overlay<'_> {
    fn drop(&mut self) {
        // The overlay first, then /nix; the lower image (in `lower`) last.
        self.overlay.borrow_mut().take();
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters and `/`).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn overlay_url(lower_store: &str, upper: &str, extra: &str) -> String {
    format!(
        "local-overlay://?lower-store={}&upper-layer={}&check-mount=true{extra}",
        enc(lower_store),
        enc(upper)
    )
}

fn base(p: &str) -> &str {
    p.trim_start_matches("/nix/store/")
}

impl<'a> Overlay<'a> {
    fn setup(ctx: &'a Ctx, fs: &'a Rootfs, fx: &'a Fixture, kind: Kind, name: &str) -> Result<Overlay<'a>> {
        let dir = ctx.fresh_dir(&format!("ov-{name}-{}-{}", fs.suite, kind.short()))?;
        let lower_root = format!("{dir}/lower");
        std::fs::create_dir_all(ctx.host(&lower_root))?;
        host(
            "cp",
            [
                std::ffi::OsString::from("-a"),
                ctx.host(&format!("{}/nix", fx.root)).into(),
                ctx.host(&lower_root).into(),
            ],
        )?;
        let base = match kind.image() {
            true => Some(crate::images::base(ctx, fs, fx)?),
            false => None,
        };
        let lower = Lower::start(ctx, fs, kind, &lower_root, &format!("{dir}/lower.sock"), base)?;
        let mnts = vec![mounts::tmpfs(&fs.host_path("/nix"), "1g")?];
        std::fs::create_dir_all(fs.host_path("/nix/store"))?;
        std::fs::create_dir_all(fs.host_path("/nix/var/nix/gcroots"))?;
        let upper = format!("{dir}/upper");
        let url = overlay_url(&lower.daemon().url(), &upper, "");
        let ov = Overlay {
            ctx,
            fs,
            fx,
            dir,
            lower: std::cell::RefCell::new(lower),
            upper,
            overlay: std::cell::RefCell::new(None),
            url,
            hook: "/e2e/bin/remount-hook".into(),
            mounts: mnts,
        };
        ov.mount_overlay()?;
        Ok(ov)
    }

    /// Mounts OverlayFS on `/nix/store` over the lower dir.
    fn mount_overlay(&self) -> Result<()> {
        let lowerdir = self.lower.borrow().store_dir();
        let m = mounts::overlay(
            self.fs,
            &OverlaySpec {
                lowerdir: &lowerdir,
                upperdir: &self.upper,
                workdir: &format!("{}/work", self.dir),
                target: "/nix/store",
            },
        )?;
        *self.overlay.borrow_mut() = Some(m);
        Ok(())
    }

    /// Runs `f` on the lower store with the overlay unmounted (image flavours,
    /// whose lower image is replaced under it), then mounts the overlay again.
    fn with_overlay_down(&self, f: impl FnOnce(&mut Lower) -> Result<()>) -> Result<()> {
        self.overlay.borrow_mut().take();
        let res = f(&mut self.lower.borrow_mut());
        self.mount_overlay()?;
        res
    }

    fn kind(&self) -> Kind {
        self.lower.borrow().kind
    }

    /// Image flavours: the image's metadata stays outside the store. The
    /// merged store (and the upper layer: no whiteout) has no
    /// `.snix-lower-store` entry, and the mounted image root's one holds
    /// exactly the bytes `mk-lower-image` wrote.
    fn metadata_outside_store(&self) -> Result<()> {
        let name = crate::images::METADATA_DIR;
        let merged = self.fs.host_path(&format!("/nix/store/{name}"));
        ensure!(
            merged.symlink_metadata().is_err(),
            "the merged store has a {name} entry: the image's metadata must stay outside its store dir"
        );
        let upper = self.ctx.host(&format!("{}/{name}", self.upper));
        ensure!(
            upper.symlink_metadata().is_err(),
            "the upper layer has a {name} entry (a whiteout is no longer needed or made)"
        );
        let l = self.lower.borrow();
        let img = l.image.as_ref().context("no image is served")?;
        let meta = self.fs.host_path(&format!("{}/{name}", l.image_root()));
        let now = crate::images::metadata_digest(&meta)?;
        ensure!(
            now == img.metadata,
            "{} differs from the {name} mk-lower-image made in {}",
            meta.display(),
            img.dir
        );
        Ok(())
    }

    /// Image flavours: a copy of the image served now, damaged by `damage`
    /// (given where a store path is in the copy), mounted in place of the
    /// image under a fresh overlay mount, and our daemon restarted on it (a
    /// replaced mount is refused by a running one). The copy is not the
    /// image and is not registered for the read-only check; the image is
    /// never touched. `name` names the copy; the result is the restart's.
    fn damaged_image(&self, name: &str, damage: impl Fn(&dyn Fn(&str) -> PathBuf) -> Result<()>) -> Result<()> {
        let img = self.lower.borrow().image.clone().context("no image is served")?;
        let copy = format!("{}/{name}", self.dir);
        host(
            "cp",
            [
                std::ffi::OsString::from("-a"),
                self.ctx.host(&img.dir).into(),
                self.ctx.host(&copy).into(),
            ],
        )?;
        let store = crate::images::lower_dir(&copy);
        damage(&|p| self.ctx.host(&format!("{store}/{}", base(p))))?;
        let erofs = match img.erofs {
            Some(_) => {
                let f = format!("{copy}.erofs");
                crate::images::mkfs_erofs(self.ctx, &copy, &f)?;
                Some(f)
            }
            None => None,
        };
        // The metadata is copied undamaged.
        let damaged = crate::images::Image {
            dir: copy,
            erofs,
            metadata: img.metadata,
        };
        self.with_overlay_down(|l| l.serve_image(self.ctx, self.fs, damaged))
    }

    /// `local?root=…` URL of the lower store, for Nix acting on it directly.
    fn lower_local(&self) -> String {
        format!("local?root={}", self.lower.borrow().root)
    }

    /// `unix://` URL of the lower store's daemon.
    fn lower_daemon(&self) -> String {
        self.lower.borrow().daemon().url()
    }

    /// Runs a command in the chroot with `NIX_REMOTE` set to the overlay
    /// store; `{O}` in an argument is the overlay URL, `{D}` the lower
    /// daemon's URL, `{L}` the lower local store.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let (o, d, l) = (self.url.clone(), self.lower_daemon(), self.lower_local());
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{O}", &o).replace("{D}", &d).replace("{L}", &l))
            .collect();
        let mut cmd = self.fs.command(&args);
        cmd.env("NIX_REMOTE", &self.url);
        let mut out = crate::rootfs::capture(&mut cmd)?;
        out.desc = format!("[{}] {}", self.fs.label, args.join(" "));
        Ok(out)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        if !out.success() {
            bail!(
                "{}; lower daemon log: {}",
                out.failure_text("failed"),
                self.lower.borrow().daemon().log_tail()
            );
        }
        Ok(out.stdout().trim().to_string())
    }

    /// Writes a file under the scenario directory; returns its chroot path.
    fn file(&self, name: &str, contents: &str) -> Result<String> {
        let p = format!("{}/files/{name}", self.dir);
        self.ctx.write(&p, contents.as_bytes())?;
        Ok(p)
    }

    /// Adds a file to the lower store with Nix directly, then makes the lower
    /// daemon serve the new state.
    fn add_to_lower(&self, file: &str) -> Result<String> {
        let p = self.ok(&["nix-store", "--store", "{L}", "--add", file])?;
        self.refresh_lower()?;
        Ok(p)
    }

    fn refresh_lower(&self) -> Result<()> {
        if self.kind().image() {
            return self.with_overlay_down(|l| l.refresh(self.ctx, self.fs));
        }
        self.lower.borrow_mut().refresh(self.ctx, self.fs)
    }

    fn remount(&self) -> Result<()> {
        mounts::remount(self.fs, "/nix/store")
    }

    /// Host path of `p` in the lower dir, as the chroot sees it (an image
    /// flavour's lower dir is a mount made inside the chroot).
    fn lower_host(&self, p: &str) -> PathBuf {
        self.fs
            .host_path(&format!("{}/{}", self.lower.borrow().store_dir(), base(p)))
    }

    fn upper_host(&self, p: &str) -> PathBuf {
        self.ctx.host(&format!("{}/{}", self.upper, base(p)))
    }

    fn merged_host(&self, p: &str) -> PathBuf {
        self.fs.host_path(&format!("/nix/store/{}", base(p)))
    }

    fn lower_hash(&self) -> Result<String> {
        tree_hash(&self.fs.host_path(&self.lower.borrow().store_dir()))
    }

    fn build_seed2(&self) -> Result<String> {
        self.ok(&fixture::seed2_build(&["--store", "{O}"]))
    }
}

fn exists(p: &std::path::Path) -> bool {
    p.symlink_metadata().is_ok()
}

fn inode(p: &std::path::Path) -> Result<u64> {
    Ok(p.symlink_metadata()
        .with_context(|| format!("stat {}", p.display()))?
        .ino())
}

fn check_mount(ov: &Overlay) -> Result<()> {
    ov.ok(&["nix", "store", "info", "--store", "{O}"])?;
    let via_overlay = normalize_json(&ov.ok(&[
        "nix",
        "path-info",
        "--json",
        "--recursive",
        "--store",
        "{O}",
        &ov.fx.final_out,
    ])?)?;
    let via_lower = normalize_json(&ov.ok(&[
        "nix",
        "path-info",
        "--json",
        "--recursive",
        "--store",
        "{D}",
        &ov.fx.final_out,
    ])?)?;
    ensure!(
        via_overlay == via_lower,
        "path-info through the overlay differs from the lower store's: {}",
        super::first_difference(&via_lower, &via_overlay)
    );
    Ok(())
}

fn check_post_init(ov: &Overlay) -> Result<()> {
    let fx = ov.fx;
    ensure!(
        exists(&ov.lower_host(&fx.final_out)),
        "{} missing from the lower layer",
        fx.final_out
    );
    ensure!(
        !exists(&ov.upper_host(&fx.final_out)),
        "{} unexpectedly in the upper layer",
        fx.final_out
    );
    ensure!(
        tree_hash(&ov.lower_host(&fx.tree))? == tree_hash(&ov.merged_host(&fx.tree))?,
        "merged view of {} differs from the lower layer",
        fx.tree
    );
    for q in [
        vec!["--query", "--requisites", fx.final_drv.as_str()],
        vec!["--query", "--references", fx.tree.as_str()],
        vec!["--query", "--referrers", fx.leaf.as_str()],
        vec!["--query", "--deriver", fx.final_out.as_str()],
        vec!["--query", "--outputs", fx.split_drv.as_str()],
        vec!["--query", "--valid-derivers", fx.split_dev.as_str()],
    ] {
        let mut a = vec!["nix-store", "--store", "{D}"];
        a.extend(&q);
        let lower = ov.ok(&a)?;
        a[2] = "{O}";
        let merged = ov.ok(&a)?;
        // The truth: Nix reading the lower store's own database directly.
        a[2] = "{L}";
        let direct = ov.ok(&a)?;
        ensure!(
            !lower.is_empty(),
            "`nix-store {}` printed nothing on the lower store",
            q.join(" ")
        );
        ensure!(
            lower == direct,
            "`nix-store {}`: lower daemon {lower:?} vs Nix reading the lower store's database {direct:?}",
            q.join(" ")
        );
        ensure!(
            lower == merged,
            "`nix-store {}`: lower {lower:?} vs overlay {merged:?}",
            q.join(" ")
        );
    }
    ov.ok(&["nix-store", "--store", "{D}", "--verify-path", &fx.final_out])?;
    ov.ok(&["nix-store", "--store", "{O}", "--verify-path", &fx.final_out])?;
    let hash = &base(&fx.final_out)[..32];
    for s in ["{D}", "{O}"] {
        let got = ov.ok(&["nix", "store", "path-from-hash-part", "--store", s, hash])?;
        ensure!(got == fx.final_out, "path-from-hash-part {hash} on {s} gave {got:?}");
    }
    Ok(())
}

fn add_lower(ov: &Overlay) -> Result<()> {
    let f = ov.file("overlay-file", "added to the overlay store\n")?;
    let in_overlay = ov.ok(&["nix-store", "--store", "{O}", "--add", &f])?;
    ensure!(
        exists(&ov.merged_host(&in_overlay)),
        "{in_overlay} not visible in the merged store"
    );
    ensure!(
        exists(&ov.upper_host(&in_overlay)),
        "{in_overlay} not in the upper layer"
    );
    ensure!(
        !exists(&ov.lower_host(&in_overlay)),
        "{in_overlay} leaked into the lower layer"
    );
    let g = ov.file("lower-file", "added to the lower store\n")?;
    let in_lower = ov.add_to_lower(&g)?;
    ensure!(exists(&ov.lower_host(&in_lower)), "{in_lower} not in the lower layer");
    ov.remount()?;
    ensure!(
        exists(&ov.merged_host(&in_lower)),
        "{in_lower} not visible through the overlay after remount"
    );
    ov.ok(&["nix-store", "--store", "{O}", "--verify-path", &in_lower])?;
    ensure!(
        !exists(&ov.upper_host(&in_lower)),
        "{in_lower} copied into the upper layer"
    );
    Ok(())
}

fn build(ov: &Overlay) -> Result<()> {
    let fx = ov.fx;
    let before = ov.lower_hash()?;
    let out = ov.build_seed2()?;
    ensure!(
        out != fx.final_out && out.ends_with("-e2e-final-2"),
        "unexpected build result {out:?}"
    );
    ensure!(!exists(&ov.lower_host(&out)), "{out} landed in the lower layer");
    ensure!(exists(&ov.upper_host(&out)), "{out} not in the upper layer");
    ov.ok(&["nix-store", "--store", "{O}", "--verify-path", &out])?;
    let refs = ov.ok(&["nix-store", "--store", "{O}", "--query", "--references", &out])?;
    for input in [&fx.split_out, &fx.split_dev, &fx.exe] {
        ensure!(
            refs.lines().any(|l| l == input),
            "{out} should reference lower path {input}; references: {refs}"
        );
        ensure!(
            !exists(&ov.upper_host(input)),
            "input {input} was copied into the upper layer"
        );
    }
    // A derivation that lives in the lower store, never built there.
    let built = ov.ok(&["nix-store", "--store", "{O}", "--realise", &fx.unbuilt_drv])?;
    ensure!(exists(&ov.upper_host(&built)), "{built} not in the upper layer");
    ensure!(!exists(&ov.lower_host(&built)), "{built} landed in the lower layer");
    ensure!(
        !exists(&ov.upper_host(&fx.unbuilt_drv)),
        "the lower .drv was copied into the upper layer"
    );
    let copy = std::fs::read(ov.merged_host(&built).join("copy-of-exe"))?;
    ensure!(
        copy == std::fs::read(ov.lower_host(&fx.exe))?,
        "build input read wrongly through the overlay"
    );
    ensure!(ov.lower_hash()? == before, "the lower layer changed during the build");
    Ok(())
}

/// A content-addressed output realised in the lower store: realising its
/// derivation through the overlay succeeds with the lower output path and
/// copies nothing up, and the overlay then knows its realisation. Nix 2.34's
/// overlay asks the lower store's QueryRealisation on lookup; Nix 2.26's asks
/// it when registering a build's realisation, which must then agree with the
/// lower one (a wrong answer fails the build with "already have another one").
fn ca_realisation(ov: &Overlay) -> Result<()> {
    let fx = ov.fx;
    let before = ov.lower_hash()?;
    let out = ov.ok(&["nix-store", "--store", "{O}", "--realise", &fx.ca_drv])?;
    ensure!(
        out == fx.ca_out,
        "realising {} gave {out:?}, not {}",
        fx.ca_drv,
        fx.ca_out
    );
    ensure!(
        !exists(&ov.upper_host(&fx.ca_out)),
        "the lower content-addressed output was copied into the upper layer"
    );
    let info = ov.ok(&[
        "nix",
        "realisation",
        "info",
        "--json",
        "--store",
        "{O}",
        &format!("{}^*", fx.ca_drv),
    ])?;
    let want = format!("\"outPath\":\"{}\"", base(&fx.ca_out));
    ensure!(
        info.contains(&want),
        "the overlay's realisation of {} does not name {}: {info}",
        fx.ca_drv,
        fx.ca_out
    );
    ensure!(ov.lower_hash()? == before, "the lower layer changed");
    Ok(())
}

fn delete_duplicate(ov: &Overlay) -> Result<()> {
    let f = ov.file("duplicate", "both layers\n")?;
    let upper_path = ov.ok(&["nix-store", "--store", "{O}", "--add", &f])?;
    let lower_path = ov.add_to_lower(&f)?;
    ensure!(upper_path == lower_path, "{upper_path} vs {lower_path}");
    ensure!(
        inode(&ov.merged_host(&upper_path))? != inode(&ov.lower_host(&lower_path))?,
        "expected separate copies in the two layers"
    );
    let url = format!("{}&remount-hook={}", ov.url, ov.hook);
    ov.ok(&["nix-store", "--store", &url, "--delete", &upper_path])?;
    ensure!(
        !exists(&ov.upper_host(&upper_path)),
        "{upper_path} still in the upper layer"
    );
    ensure!(
        inode(&ov.merged_host(&upper_path))? == inode(&ov.lower_host(&lower_path))?,
        "merged view is not the lower copy after deleting the upper duplicate"
    );
    Ok(())
}

fn delete_refs(ov: &Overlay) -> Result<()> {
    let fx = ov.fx;
    let before = ov.lower_hash()?;
    let out = ov.build_seed2()?;
    for input in [&fx.split_out, &fx.split_dev, &fx.exe] {
        let o = ov.run(&["nix-store", "--store", "{O}", "--delete", input])?.failed()?;
        ensure!(
            o.stderr().contains(base(input)),
            "refusal to delete {input} does not name it: {}",
            o.stderr()
        );
    }
    // Also referenced inside the lower store itself (by the seed 1 build).
    let o = ov
        .run(&["nix-store", "--store", "{L}", "--delete", &fx.exe])?
        .failed()?;
    ensure!(
        o.stderr().contains(base(&fx.exe)),
        "lower refusal does not name {}: {}",
        fx.exe,
        o.stderr()
    );
    ov.ok(&["nix-store", "--store", "{O}", "--delete", &out])?;
    ensure!(!exists(&ov.merged_host(&out)), "{out} still present after delete");
    // Now unreferenced in the overlay (dev refers to out: delete it first).
    for input in [&fx.split_dev, &fx.split_out] {
        ov.ok(&["nix-store", "--store", "{O}", "--delete", input])?;
        ensure!(
            exists(&ov.merged_host(input)),
            "{input} vanished from the merged view (whiteout?)"
        );
        ov.ok(&["nix-store", "--store", "{D}", "--verify-path", input])?;
    }
    ensure!(ov.lower_hash()? == before, "the lower layer changed");
    Ok(())
}

fn gc(ov: &Overlay) -> Result<()> {
    let before = ov.lower_hash()?;
    let out = ov.build_seed2()?;
    let root = "/nix/var/nix/gcroots/e2e-root";
    std::os::unix::fs::symlink(&out, ov.fs.host_path(root))?;
    let roots = ov.ok(&["nix-store", "--query", "--roots", &out])?;
    ensure!(roots.contains(&format!("{root} -> {out}")), "--roots: {roots:?}");
    let r = ov.ok(&["nix-store", "--gc", "--print-roots"])?;
    ensure!(r.contains(&out), "--print-roots lacks {out}: {r}");
    let live = ov.ok(&["nix-store", "--gc", "--print-live"])?;
    ensure!(live.lines().any(|l| l == out), "--print-live lacks {out}");
    let dead = ov.ok(&["nix-store", "--gc", "--print-dead"])?;
    ensure!(!dead.lines().any(|l| l == out), "--print-dead lists the rooted {out}");
    ov.run(&["nix-store", "--delete", &out])?.failed()?;
    ensure!(exists(&ov.merged_host(&out)), "{out} removed despite its root");
    ov.ok(&["nix-collect-garbage"])?;
    std::fs::read(ov.merged_host(&out).join("seed")).context("rooted output damaged by GC")?;
    std::fs::remove_file(ov.fs.host_path(root))?;
    ov.ok(&["nix-collect-garbage"])?;
    ensure!(!exists(&ov.merged_host(&out)), "{out} survived GC without a root");
    let left: Vec<_> = std::fs::read_dir(ov.ctx.host(&ov.upper))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        // An image carries no `.links` (mk-lower-image copies store objects
        // only), so Nix makes its own in the upper layer.
        .filter(|n| !(ov.kind().image() && n == ".links"))
        .collect();
    ensure!(left.is_empty(), "upper layer not empty after GC: {left:?}");
    ensure!(ov.lower_hash()? == before, "GC changed the lower layer");
    ov.ok(&["nix-store", "--store", "{D}", "--verify-path", &ov.fx.final_out])?;
    ensure!(
        exists(&ov.merged_host(&ov.fx.final_out)),
        "lower path vanished from the merged view"
    );
    Ok(())
}

fn optimise(ov: &Overlay) -> Result<()> {
    let f = ov.file("dup-file", "Duplicate\n")?;
    let p = ov.ok(&["nix-store", "--store", "{O}", "--add", &f])?;
    ov.add_to_lower(&f)?;
    ov.remount()?;
    let (l, u, m) = (ov.lower_host(&p), ov.upper_host(&p), ov.merged_host(&p));
    ensure!(inode(&u)? == inode(&m)?, "merged view should show the upper copy");
    ensure!(inode(&u)? != inode(&l)?, "expected separate copies in the two layers");
    ov.ok(&["nix-store", "--store", "{O}", "--optimise"])?;
    ov.remount()?;
    ensure!(exists(&l) && exists(&m), "{p} lost after optimise");
    ensure!(!exists(&u), "optimise left the duplicate in the upper layer");
    Ok(())
}

fn redundant_add(ov: &Overlay) -> Result<()> {
    let p = ov.ok(&["nix-store", "--store", "{O}", "--add", "/e2e/fixture/src"])?;
    ensure!(p == ov.fx.src, "added {p}, lower store has {}", ov.fx.src);
    ensure!(exists(&ov.lower_host(&p)), "{p} missing from the lower layer");
    ensure!(
        !exists(&ov.upper_host(&p)),
        "redundant add copied {p} into the upper layer"
    );
    Ok(())
}

fn verify(ov: &Overlay) -> Result<()> {
    let fx = ov.fx;
    ov.ok(&["nix-store", "--store", "{O}", "--realise", &fx.final_drv])?;
    let dummy_file = ov.file("dummy", "dummy contents\n")?;
    let dummy = ov.add_to_lower(&dummy_file)?;
    let again = ov.ok(&["nix-store", "--store", "{O}", "--add", &dummy_file])?;
    ensure!(again == dummy, "{again} vs {dummy}");
    let lower_only = ov.add_to_lower(&ov.file("lower-only", "only in the lower store\n")?)?;
    ov.ok(&["nix-store", "--store", "{O}", "--verify", "--check-contents"])?;
    let vanished = match ov.kind().image() {
        true => verify_damaged_image(ov)?,
        false => true,
    };
    if !ov.kind().image() {
        // Corrupt the lower layer behind everyone's back (this scenario's own
        // copy; left out of the read-only check, which says so).
        ov.ctx.readonly.borrow_mut().changed_on_purpose(
            &ov.ctx.host(&ov.lower.borrow().store_dir()),
            "the verify scenario corrupts this lower store copy",
        );
        let drv = ov.lower_host(&fx.tree_drv);
        std::fs::remove_file(&drv).with_context(|| format!("rm {}", drv.display()))?;
        for p in [&dummy, &lower_only] {
            host("truncate", ["-s", "0", &ov.lower_host(p).display().to_string()])?;
        }
    } else {
        // Same length, other bytes: the start check (kind and NAR size)
        // accepts it, so only reading the contents can find it.
        ov.damaged_image("damaged-contents", |store| {
            for p in [&dummy, &lower_only] {
                let f = store(p);
                let len = std::fs::metadata(&f)?.len() as usize;
                std::fs::write(&f, vec![b'#'; len]).with_context(|| format!("overwriting {}", f.display()))?;
            }
            Ok(())
        })?;
    }
    ov.remount()?;
    let out = ov
        .run(&["nix-store", "--store", "{O}", "--verify", "--check-contents"])?
        .failed()?;
    let text = out.stderr();
    ensure!(
        !vanished || text.contains(base(&fx.tree_drv)),
        "verify did not report the vanished {}: {text}",
        fx.tree_drv
    );
    ensure!(
        text.contains(base(&dummy)),
        "verify did not report the modified {dummy}: {text}"
    );
    ensure!(
        !text.contains(base(&lower_only)),
        "verify reported the lower-only {lower_only}: {text}"
    );
    Ok(())
}

/// Image flavours: an object missing from the image is found by our
/// daemon's start check before any client can ask (the restart on a copy of
/// the image without `tree_drv` is refused, naming it), so Nix's `verify`
/// never sees that damage; returns false (nothing vanished under the overlay).
fn verify_damaged_image(ov: &Overlay) -> Result<bool> {
    let drv = &ov.fx.tree_drv;
    let refused = ov.damaged_image("damaged-missing", |store| {
        let f = store(drv);
        std::fs::remove_file(&f).with_context(|| format!("rm {}", f.display()))
    });
    let err = match refused {
        Ok(()) => bail!("our daemon started on an image missing {drv}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains(base(drv)) && err.contains("is not in the lower dir"),
        "the refusal of an image missing {drv} does not say so: {err}"
    );
    Ok(false)
}

fn bad_uris(ov: &Overlay) -> Result<()> {
    let bad = format!("{}/bad", ov.dir);
    std::fs::create_dir_all(ov.ctx.host(&bad))?;
    let lower = ov.lower_daemon();
    let bad_lower = {
        let l = ov.lower.borrow();
        format!("unix://{}?real={bad}", l.socket)
    };
    let cases = [
        ("root", format!("{}&root={bad}", overlay_url(&lower, &ov.upper, ""))),
        ("lower", overlay_url(&bad_lower, &ov.upper, "")),
        ("upper", overlay_url(&lower, &bad, "")),
    ];
    for (what, url) in cases {
        let o = ov.run(&["nix", "store", "info", "--store", &url])?.failed()?;
        ensure!(
            o.stderr().contains("mounted incorrectly"),
            "bad {what}: expected a check-mount error, got: {}",
            o.stderr()
        );
    }
    ov.ok(&["nix", "store", "info", "--store", "{O}"])?;
    Ok(())
}

fn remount(ov: &Overlay) -> Result<()> {
    let p = ov.add_to_lower(&ov.file("after-mount", "added after the overlay was mounted\n")?)?;
    ov.remount()?;
    ov.remount()?;
    ensure!(exists(&ov.merged_host(&p)), "{p} not visible after remount");
    ov.ok(&["nix", "store", "info", "--store", "{O}"])?;
    ov.ok(&["nix-store", "--store", "{O}", "--verify-path", &p])?;
    ensure!(!exists(&ov.upper_host(&p)), "{p} copied into the upper layer");
    Ok(())
}

/// Deleting a path present in both layers goes around OverlayFS (so no
/// whiteout is created); afterwards OverlayFS must be remounted or it serves
/// stale file handles. Without `remount-hook` the sequence below runs into
/// ESTALE; with it, Nix remounts by itself and the same sequence works.
fn stale_file_handle(ov: &Overlay) -> Result<()> {
    // A directory: its OverlayFS dentry is what goes stale.
    ov.file("stale/a/b/file", "present in both layers\n")?;
    ov.file("stale/top", "top\n")?;
    let f = format!("{}/files/stale", ov.dir);
    let trigger = |url: &str| -> Result<Vec<Output>> {
        let mut outs = vec![];
        let mut step = |o: Output| -> bool {
            let ok = o.success();
            outs.push(o);
            ok
        };
        // Upper first, then lower: the path exists in both layers.
        let first = ov.run(&["nix-store", "--store", url, "--add", &f])?;
        let p = first.stdout().trim().to_string();
        if !step(first) {
            return Ok(outs);
        }
        let o = ov.run(&["nix-store", "--store", "{L}", "--add", &f])?;
        if !step(o) {
            return Ok(outs);
        }
        ov.refresh_lower()?;
        // Deleting through the overlay removes the upper copy directly.
        if !step(ov.run(&["nix-store", "--store", url, "--delete", &p])?) {
            return Ok(outs);
        }
        // Then the lower copy goes too, and the path is added again.
        if !step(ov.run(&["nix-store", "--store", "{L}", "--delete", &p])?) {
            return Ok(outs);
        }
        ov.refresh_lower()?;
        step(ov.run(&["nix-store", "--store", url, "--add", &f])?);
        Ok(outs)
    };
    let without = trigger(&ov.url)?;
    let last = without.last().context("no step ran")?;
    if ov.kind().image() {
        // Every lower change came with a fresh overlay mount: nothing stale.
        ensure!(
            without.len() == 5 && without.iter().all(Output::success),
            "image flavour: the sequence without remount-hook must succeed; last step: {}",
            last.failure_text("ended")
        );
        ov.ok(&["nix-store", "--store", "{O}", "--delete", without[0].stdout().trim()])?;
    } else {
        ensure!(
            !last.success() && last.stderr().contains("Stale file handle"),
            "expected ESTALE without remount-hook; last step: {}",
            last.failure_text("ended")
        );
    }
    ov.remount()?;
    let with_hook = format!("{}&remount-hook={}", ov.url, ov.hook);
    let outs = trigger(&with_hook)?;
    let p = outs.first().context("no step ran")?.stdout().trim().to_string();
    for o in outs {
        o.ok()?;
    }
    ensure!(exists(&ov.upper_host(&p)), "{p} should be back in the upper layer");
    ov.ok(&["nix-store", "--store", "{O}", "--verify-path", &p])?;
    Ok(())
}

/// The URL printed by `snix-lower-store store-url` opens the overlay store.
fn store_url(ov: &Overlay) -> Result<()> {
    if ov.lower.borrow().kind == Kind::Nix {
        return Ok(());
    }
    let (socket, lower_dir) = {
        let l = ov.lower.borrow();
        (l.socket.clone(), l.store_dir())
    };
    let out = daemons::ours_cli(
        ov.ctx,
        ov.fs,
        &[
            "store-url",
            "--socket",
            &socket,
            "--lower-dir",
            &lower_dir,
            "--upper-layer",
            &ov.upper,
        ],
    )?
    .ok()?;
    let url = out.stdout().trim().to_string();
    ensure!(url.starts_with("local-overlay://"), "store-url printed {url:?}");
    ensure!(url.contains("check-mount=true"), "store-url has check-mount off: {url}");
    ov.ok(&["nix", "store", "info", "--store", &url])?;
    let got = ov.ok(&["nix", "path-info", "--store", &url, &ov.fx.final_out])?;
    ensure!(got == ov.fx.final_out, "path-info through store-url's URL gave {got:?}");
    Ok(())
}
