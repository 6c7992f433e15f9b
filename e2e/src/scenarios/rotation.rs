//! Rotation scenario (issue 21 part 1): the lower of a local-overlay store
//! is replaced, and `snix-lower-store reconcile` makes Nix's upper database
//! agree with the new lower, with real Nix and a real OverlayFS.
//!
//! Steps: lower A (a copy of the fixture) served by our daemon;
//! `--check-validity` of the fixture's final output copies its closure's infos into the upper
//! database; a build of seed 2 puts an upper path on top whose closure is
//! lower paths. Lower B is A with that closure's exe/tree/split/final
//! outputs deleted by Nix, and a new signature on the fixture's leaf
//! (referred to by a copied row) and source tree (a copied row nothing
//! refers to). After rotating to B (new daemon, new overlay
//! mount, same upper layer and upper database):
//! - `reconcile --on-broken refuse` exits 1 naming the upper path and the
//!   lost paths, and changes nothing (upper database files and upper layer
//!   digest equal);
//! - `reconcile --on-broken invalidate` exits 0 with exactly 5 lost, 1
//!   broken, 2 changed (one updated in place, one re-copied: both show
//!   the new signature); then `nix path-info` of a vanished path fails, `nix-store
//!   --verify` finds nothing, GC works, the seed-2 build rebuilds its
//!   vanished inputs, GC works again, and a second reconcile is answered by the settled file;
//! - lower C = B plus one path (grow-only): reconcile finds nothing, writes
//!   nothing, and is timed against the `import` of C's database.
//!
//! Invariants: each lower copy is made before any daemon serves it and is
//! never changed afterwards (the read-only check covers them); every mount
//! is dropped (overlay first) when the scenario ends.

use crate::ctx::Ctx;
use crate::daemons::{self, Daemon};
use crate::fixture::{self, Fixture};
use crate::mounts::{self, Mounted, OverlaySpec};
use crate::report::{tagged, Report};
use crate::rootfs::{host, Output, Rootfs};
use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

pub const NAMES: &[&str] = &["rotation/replace-lower"];

pub fn run(ctx: &Ctx, fs: &Rootfs, fx: &Fixture, report: &mut Report) {
    let name = tagged(NAMES[0], &fs.label);
    let mut note = None;
    report.run(&name, || {
        note = Some(replace_lower(ctx, fs, fx)?);
        Ok(())
    });
    if let Some(n) = note {
        report.note(&name, &n);
    }
}

/// The overlay store across rotations: one upper layer and `/nix`, a
/// daemon and an overlay mount per lower.
struct Rot<'a> {
    ctx: &'a Ctx,
    fs: &'a Rootfs,
    dir: String,
    overlay: Option<Mounted>,
    daemon: Option<Daemon>,
    state: String,
    url: String,
    _nix: Mounted,
}

impl Drop for Rot<'_> {
    fn drop(&mut self) {
        self.overlay.take();
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
    }
}

impl<'a> Rot<'a> {
    fn new(ctx: &'a Ctx, fs: &'a Rootfs, dir: String) -> Result<Rot<'a>> {
        let nix = mounts::tmpfs(&fs.host_path("/nix"), "1g")?;
        std::fs::create_dir_all(fs.host_path("/nix/store"))?;
        std::fs::create_dir_all(fs.host_path("/nix/var/nix/gcroots"))?;
        Ok(Rot {
            ctx,
            fs,
            dir,
            overlay: None,
            daemon: None,
            state: String::new(),
            url: String::new(),
            _nix: nix,
        })
    }

    /// Replaces the lower with `{dir}/<name>`: stops daemon and overlay,
    /// imports the new lower into a fresh state dir (timed), serves it and
    /// mounts the overlay on it. Returns the import's time.
    fn rotate_to(&mut self, name: &str) -> Result<Duration> {
        self.overlay.take();
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        let root = format!("{}/{name}", self.dir);
        let state = format!("{root}-state");
        // From Nix's database, which carries the signatures.
        let db = format!("{root}/nix/var/nix/db/db.sqlite");
        let store = format!("{root}/nix/store");
        let t = Instant::now();
        daemons::ours_cli(
            self.ctx,
            self.fs,
            &["import", "--state-dir", &state, "--lower-dir", &store, "--nix-db", &db],
        )?
        .ok()?;
        let import = t.elapsed();
        let d = daemons::start_ours(self.ctx, self.fs, &format!("{}/{name}.sock", self.dir), &store, &state)?;
        self.url = format!(
            "local-overlay://?lower-store={}&upper-layer={}&check-mount=true",
            super::overlay::enc(&d.url()),
            super::overlay::enc(&format!("{}/upper", self.dir))
        );
        self.daemon = Some(d);
        self.state = state;
        self.overlay = Some(mounts::overlay(
            self.fs,
            &OverlaySpec {
                lowerdir: &store,
                upperdir: &format!("{}/upper", self.dir),
                workdir: &format!("{}/work", self.dir),
                target: "/nix/store",
            },
        )?);
        Ok(import)
    }

    /// A Nix command on the overlay store.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.fs.command(args);
        cmd.env("NIX_REMOTE", &self.url);
        crate::rootfs::capture(&mut cmd)
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        Ok(self.run(args)?.ok()?.stdout().trim().to_string())
    }

    /// `reconcile` against the lower served now.
    fn reconcile(&self, on_broken: &str) -> Result<Output> {
        let settled = format!("{}/settled", self.dir);
        daemons::ours_cli(
            self.ctx,
            self.fs,
            &[
                "--log-target",
                "stderr",
                "reconcile",
                "--store-url",
                &self.url,
                "--nix-store",
                "nix-store",
                "--on-broken",
                on_broken,
                "--state-dir",
                &self.state,
                "--settled-file",
                &settled,
            ],
        )
    }

    /// SHA-256 of the upper database files (not `-shm`, SQLite's scratch)
    /// and of the upper layer tree.
    fn upper_digest(&self) -> Result<String> {
        let mut s = String::new();
        for f in ["db.sqlite", "db.sqlite-wal"] {
            let p = self.fs.host_path(&format!("/nix/var/nix/db/{f}"));
            if p.exists() {
                s.push_str(&crate::readonly::file_hash(&p)?);
            }
        }
        s.push_str(&super::tree_hash(&self.ctx.host(&format!("{}/upper", self.dir)))?);
        Ok(s)
    }

    fn build_seed2(&self) -> Result<String> {
        self.ok(&fixture::seed2_build(&[]))
    }
}

/// Copies the fixture's store to `{dir}/<name>` (objects and database).
fn copy_lower(ctx: &Ctx, fx: &Fixture, dir: &str, name: &str) -> Result<String> {
    let root = format!("{dir}/{name}");
    std::fs::create_dir_all(ctx.host(&root))?;
    host(
        "cp",
        [
            std::ffi::OsString::from("-a"),
            ctx.host(&format!("{}/nix", fx.root)).into(),
            ctx.host(&root).into(),
        ],
    )?
    .ok()?;
    Ok(root)
}

/// Lower A (the fixture), B (A without the seed-2 build's exe/tree/split
/// closure, two paths newly signed) and C (B plus one path); returns the
/// scenario dir and B's `local?root=` URL.
fn make_lowers(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<(String, String)> {
    let dir = ctx.fresh_dir(&format!("rot-{}", fs.suite))?;
    copy_lower(ctx, fx, &dir, "lowerA")?;
    let b = copy_lower(ctx, fx, &dir, "lowerB")?;
    let vanish = [&fx.final_out, &fx.split_out, &fx.split_dev, &fx.tree, &fx.exe];
    let mut del = vec!["nix-store", "--store"];
    let local_b = format!("local?root={b}");
    del.extend([local_b.as_str(), "--delete", "--ignore-liveness"]);
    del.extend(vanish.iter().map(|s| s.as_str()));
    fs.run(&del)?.ok()?;
    // Same names, other info: a new signature on a referenced path (leaf,
    // refreshed in place) and on an unreferenced one (src, re-copied).
    let key = format!("{dir}/rot.key");
    let secret = fs.ok(&["nix", "key", "generate-secret", "--key-name", "e2e-rotation"])?;
    ctx.write(&key, secret.trim().as_bytes())?;
    fs.run(&[
        "nix",
        "store",
        "sign",
        "--store",
        &local_b,
        "--key-file",
        &key,
        &fx.leaf,
        &fx.src,
    ])?
    .ok()?;
    let c = format!("{dir}/lowerC");
    host(
        "cp",
        [std::ffi::OsString::from("-a"), ctx.host(&b).into(), ctx.host(&c).into()],
    )?
    .ok()?;
    let local_c = format!("local?root={c}");
    ctx.write(&format!("{dir}/extra"), b"only in lower C\n")?;
    let extra = format!("{dir}/extra");
    fs.run(&["nix-store", "--store", &local_c, "--add", &extra])?.ok()?;

    Ok((dir, local_b))
}

fn replace_lower(ctx: &Ctx, fs: &Rootfs, fx: &Fixture) -> Result<String> {
    let (dir, local_b) = make_lowers(ctx, fs, fx)?;
    let mut r = Rot::new(ctx, fs, dir.clone())?;
    r.rotate_to("lowerA")?;
    // `--check-validity` asks isValidPath, which copies a lower path's
    // info and its closure's into the upper database (`-qR` does not).
    r.ok(&["nix-store", "--check-validity", &fx.final_out, &fx.src])?;
    let mine = r.build_seed2()?;
    r.rotate_to("lowerB")?;
    // Without reconcile Nix still believes in a vanished path.
    r.ok(&["nix", "path-info", &fx.exe])
        .context("before reconcile, Nix was expected to still list the vanished exe (issue 21)")?;
    refuse(&r, &mine, fx)?;
    invalidate(&r, &mine, fx)?;
    // Every path of B copied into the upper database, so the grow-only
    // reconcile checks them all.
    let all_b = fs.ok(&["nix", "path-info", "--all", "--store", &local_b])?;
    let mut check = vec!["nix-store", "--check-validity"];
    check.extend(all_b.lines());
    r.ok(&check)?;
    let import = r.rotate_to("lowerC")?;
    let before = r.upper_digest()?;
    let t = Instant::now();
    let out = r.reconcile("refuse")?.ok()?;
    let took = t.elapsed();
    let line = out.stdout();
    ensure!(
        line.contains("0 lost, 0 changed, 0 broken, 0 invalidated, 0 updated"),
        "grow-only reconcile did something: {line}"
    );
    ensure!(
        r.upper_digest()? == before,
        "grow-only reconcile changed the upper store"
    );
    ensure!(
        took <= import + Duration::from_millis(250),
        "grow-only reconcile took {took:?}, the import of the same lower {import:?}"
    );
    Ok(format!(
        "grow-only rotation (lower C = B + 1 path): reconcile {:.3}s (full plan: {}), import of C's database \
         {:.3}s",
        took.as_secs_f64(),
        line.trim(),
        import.as_secs_f64()
    ))
}

/// `--on-broken refuse`: exit 1, the broken upper path and a lost path it
/// needs named, nothing changed.
fn refuse(r: &Rot, mine: &str, fx: &Fixture) -> Result<()> {
    let before = r.upper_digest()?;
    let out = r.reconcile("refuse")?;
    ensure!(out.code == Some(1), "{}", out.failure_text("was expected to exit 1"));
    let err = out.stderr();
    ensure!(
        err.contains(&format!("broken (upper layer): {mine}")),
        "refusal does not name {mine}: {err}"
    );
    ensure!(
        err.contains(&format!("needs lost: {}", fx.exe)),
        "refusal does not name the lost exe: {err}"
    );
    ensure!(
        err.contains("--on-broken invalidate"),
        "refusal does not say how to proceed: {err}"
    );
    ensure!(
        r.upper_digest()? == before,
        "a refused reconcile changed the upper store"
    );
    Ok(())
}

/// `--on-broken invalidate`, then Nix behaves as on a plain store.
fn invalidate(r: &Rot, mine: &str, fx: &Fixture) -> Result<()> {
    let out = r.reconcile("invalidate")?.ok()?;
    let line = out.stdout();
    ensure!(
        line.contains("5 lost, 2 changed, 1 broken, 7 invalidated, 1 updated in place"),
        "unexpected summary: {line}; log: {}",
        out.stderr()
    );
    for p in [&fx.leaf, &fx.src] {
        let sigs = r.ok(&["nix", "path-info", "--sigs", p])?;
        ensure!(
            sigs.contains("e2e-rotation:"),
            "{p} does not show the new lower's signature: {sigs}"
        );
    }
    for p in [&fx.exe, &fx.final_out, &mine.to_string()] {
        r.run(&["nix", "path-info", p])?
            .failed()
            .with_context(|| format!("{p} vanished but is still valid"))?;
    }
    let base = mine.trim_start_matches("/nix/store/");
    ensure!(
        !r.ctx.host(&format!("{}/upper/{base}", r.dir)).exists(),
        "the broken upper path's files are still in the upper layer"
    );
    let v = r.run(&["nix-store", "--verify"])?.ok()?;
    ensure!(
        !v.stderr().contains("disappeared"),
        "nix-store --verify found errors: {}",
        v.stderr()
    );
    r.ok(&["nix-store", "--gc"]).context("GC right after reconcile")?;
    let again = r.build_seed2()?;
    ensure!(again == mine, "the rebuild made {again}, not {mine}");
    r.ok(&["nix", "path-info", &fx.exe])
        .context("the rebuild did not rebuild the vanished exe")?;
    r.ok(&["nix-store", "--gc"]).context("GC after the rebuild")?;
    let out = r.reconcile("refuse")?.ok()?;
    ensure!(
        out.stdout().contains("lower unchanged since last settled"),
        "a second reconcile was not answered by the settled file: {}",
        out.stdout()
    );
    Ok(())
}
