//! Start-up and size modes of the bench (issue 14, "Measured"): how long a
//! freshly mounted lower store takes to answer its first QueryPathInfo, the
//! three ways (our import then serve, our daemon on the image's own index,
//! Nix's `--load-db` then `nix-daemon`), how big each index is per path, and
//! how big the store is as erofs / squashfs images against the directory.
//!
//! Invariants: every start is timed from before its first step (import,
//! load-db, mount) to the first QueryPathInfo answered over a fresh
//! connection, and the daemon is stopped before the next start; the three
//! ways alternate within each round, so a change in machine load hits all of
//! them alike. The image index is built once into the cached generated store
//! (`<store>/.snix-lower-store/`, where `serve` finds it) and reused.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use snix_lower_store_bench::gen::Store;
use snix_lower_store_bench::stats::median;
use snix_lower_store_testkit::client::Client;

use super::{gen_store, loadavg, spec};
use crate::args::Args;
use crate::daemons::{import_ours, load_db_nix, start_nix, start_ours, start_ours_on, Daemon};
use crate::env::{sh_ok, Env};
use crate::load::client_rt;

/// A store-dir index's size: the database file and its WAL, if any.
fn db_bytes(f: &Path) -> u64 {
    let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = f.as_os_str().to_owned();
    wal.push("-wal");
    len(f.to_path_buf()) + len(PathBuf::from(wal))
}

/// The generated store of `n` paths: text objects at the compare mode's
/// size, empty files above 100k paths (1M text objects would cost GBs).
fn startup_store(env: &Env, args: &Args, n: usize) -> Result<Store> {
    gen_store(env, &spec(args, n, n > 100_000))
}

/// The image's own index of the generated store, built on first use: the
/// store's root is the image root (`<root>/nix/store` the lower dir, the
/// index in `<root>/.snix-lower-store/`).
pub(crate) fn ensure_image_index(env: &Env, store: &Store) -> Result<PathBuf> {
    let index = store.root.join(".snix-lower-store/index");
    if index.exists() {
        return Ok(index);
    }
    let t0 = Instant::now();
    sh_ok(
        Command::new(&env.ours)
            .arg("build-index")
            .arg("--lower-dir")
            .arg(store.store_dir())
            .arg("--registration")
            .arg(&store.registration)
            .arg("--log-target")
            .arg("stderr"),
    )?;
    println!(
        "# build-index of {} paths into {}: {:.2}s (once, while making the image)",
        store.paths.len(),
        index.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(index)
}

/// Why erofs images cannot be made and mounted here, if they cannot.
fn erofs_unavailable() -> Option<String> {
    if Command::new("mkfs.erofs").arg("--help").output().is_err() {
        return Some("mkfs.erofs not found (Debian: erofs-utils)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.split_whitespace().last() == Some("erofs")) {
        return Some("the kernel has no erofs (not in /proc/filesystems)".into());
    }
    None
}

/// mk-lower-image's default erofs image of the image root (`nix/store` and
/// `.snix-lower-store`, bind-mounted into a staging root so Nix's database
/// beside them stays out), cached under the work directory.
fn ensure_erofs(env: &Env, store: &Store) -> Result<PathBuf> {
    let dir = env.work.join("images");
    std::fs::create_dir_all(&dir)?;
    let key = store.root.file_name().unwrap().to_string_lossy().to_string();
    let img = dir.join(format!("{key}-root.erofs"));
    if img.exists() {
        return Ok(img);
    }
    let index = ensure_image_index(env, store)?;
    let stage = dir.join(format!("{key}-stage"));
    let (stage_store, stage_meta) = (stage.join("nix/store"), stage.join(".snix-lower-store"));
    std::fs::create_dir_all(&stage_store)?;
    std::fs::create_dir_all(&stage_meta)?;
    let bind = |from: &Path, to: &Path| sh_ok(Command::new("mount").arg("--bind").arg(from).arg(to));
    bind(&store.store_dir(), &stage_store)?;
    bind(index.parent().unwrap(), &stage_meta)?;
    let tmp = dir.join(format!("{key}-root.erofs.tmp"));
    let t0 = Instant::now();
    let made = sh_ok(
        Command::new("mkfs.erofs")
            .args(["-zlz4hc,12", "-Eztailpacking", "-T1", "--all-root", "--quiet"])
            .arg(&tmp)
            .arg(&stage),
    );
    let _ = sh_ok(Command::new("umount").arg(&stage_store));
    let _ = sh_ok(Command::new("umount").arg(&stage_meta));
    made?;
    std::fs::rename(&tmp, &img)?;
    println!(
        "# erofs image {} ({} bytes) made in {:.1}s (once)",
        img.display(),
        std::fs::metadata(&img)?.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(img)
}

/// Connect, handshake, one QueryPathInfo that must be answered valid.
fn first_answer(d: &Daemon, path: &str) -> Result<()> {
    client_rt().block_on(async {
        let mut c = Client::connect(&d.socket, 38).await?;
        c.query_path_info(path)
            .await?
            .with_context(|| format!("{}: {path} not valid", d.name))?;
        Ok(())
    })
}

#[derive(Default)]
struct Way {
    label: String,
    total: Vec<f64>,
    /// The part before the daemon starts (import, load-db, mount).
    prep: Vec<f64>,
    /// From the start to the daemon's socket accepting (ours: after the
    /// image check and opening the index).
    sock: Vec<f64>,
    /// The daemon's CPU seconds (user + system) when the first answer came.
    cpu: Vec<f64>,
}

impl Way {
    fn new(label: &str) -> Way {
        Way {
            label: label.into(),
            ..Default::default()
        }
    }
    fn min(&self) -> f64 {
        self.total.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.total.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    fn med(&self) -> f64 {
        median(self.total.clone())
    }
}

/// Median of `v` as "0.123 s", or "-" when nothing was recorded.
fn med_or_dash(v: &[f64]) -> String {
    if v.is_empty() {
        "-".to_string()
    } else {
        format!("{:.3} s", median(v.to_vec()))
    }
}

/// One start of the directory form: serve the image's own index from the
/// generated store, answer, stop. Records into `w`.
fn dir_start(env: &Env, store: &Store, empty_state: &Path, probe: &str, check: &str, w: &mut Way) -> Result<()> {
    let t0 = Instant::now();
    let d = start_ours_on(env, &store.store_dir(), empty_state, None, Some(check))?;
    let sock = t0.elapsed().as_secs_f64();
    first_answer(&d, probe)?;
    w.total.push(t0.elapsed().as_secs_f64());
    w.sock.push(sock);
    w.cpu.push(d.cpu());
    drop(d);
    if empty_state.join("index.sqlite").exists() {
        bail!("serve created an index in the empty state dir instead of using the image's own");
    }
    Ok(())
}

/// One start of the erofs form: mount the image, serve the index it
/// carries, answer, stop, unmount. Records into `w` (prep: the mount).
fn erofs_start(env: &Env, img: &Path, empty_state: &Path, probe: &str, check: &str, w: &mut Way) -> Result<()> {
    let mnt = env.work.join("run/erofs-mnt");
    std::fs::create_dir_all(&mnt)?;
    let t0 = Instant::now();
    sh_ok(
        Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(img)
            .arg(&mnt),
    )?;
    let mount = t0.elapsed().as_secs_f64();
    let r = (|| {
        let d = start_ours_on(env, &mnt.join("nix/store"), empty_state, None, Some(check))?;
        let sock = t0.elapsed().as_secs_f64();
        first_answer(&d, probe)?;
        w.total.push(t0.elapsed().as_secs_f64());
        w.prep.push(mount);
        w.sock.push(sock);
        w.cpu.push(d.cpu());
        drop(d);
        Ok(())
    })();
    sh_ok(Command::new("umount").arg(&mnt))?;
    r
}

/// The ways of one start-up run: (a), (b) and (b') once per image check, (c).
fn startup_ways(checks: &[&str]) -> Vec<(String, Way)> {
    let mut ways = vec![(
        "a".to_string(),
        Way::new("(a) ours: import --registration into a fresh state dir, then serve"),
    )];
    for c in checks {
        ways.push((
            "b".into(),
            Way::new(&format!(
                "(b) ours: serve the image's own index (directory; no import), --image-check {c}"
            )),
        ));
    }
    for c in checks {
        ways.push((
            "erofs".into(),
            Way::new(&format!(
                "(b') ours: mount the erofs image, serve its own index, --image-check {c}"
            )),
        ));
    }
    ways.push(("c".into(), Way::new("(c) Nix: nix-store --load-db, then nix-daemon")));
    ways
}

/// `--startup N`: time from "lower mounted" to the first answered
/// QueryPathInfo, the three ways, interleaved; then the index sizes.
pub(crate) fn mode_startup(env: &Env, args: &Args, n: usize) -> Result<()> {
    let store = startup_store(env, args, n)?;
    let index = ensure_image_index(env, &store)?;
    let erofs = match erofs_unavailable() {
        Some(why) => {
            println!("# erofs: {why}; the image form is measured as a directory only");
            None
        }
        None if args.skip_erofs => None,
        None => Some(ensure_erofs(env, &store)?),
    };
    let state = env.work.join("run/startup-state");
    let empty_state = env.work.join("run/startup-empty-state");
    let _ = std::fs::remove_dir_all(&empty_state);
    std::fs::create_dir_all(&empty_state)?;
    let probe = store.paths[store.paths.len() / 2].0.clone();
    let nix_runs = args.startup_nix_runs.unwrap_or(args.startup_runs);
    let checks: Vec<&str> = args.startup_image_checks.split(',').collect();
    let mut ways = startup_ways(&checks);
    println!(
        "# start-up: {} rounds (Nix: {nix_runs}), each way in turn; image checks {checks:?}; probe {probe}",
        args.startup_runs
    );
    let on = |w: &str| args.startup_ways.split(',').any(|x| x == w);
    for round in 0..args.startup_runs {
        let before: Vec<usize> = ways.iter().map(|(_, w)| w.total.len()).collect();
        let (mut bi, mut ei) = (0, 0);
        for (kind, w) in ways.iter_mut() {
            match kind.as_str() {
                "a" if on("a") => start_import(env, &store, &state, &probe, w)?,
                "b" if on("b") => {
                    dir_start(env, &store, &empty_state, &probe, checks[bi], w)?;
                    bi += 1;
                }
                "erofs" if on("erofs") => {
                    if let Some(img) = &erofs {
                        erofs_start(env, img, &empty_state, &probe, checks[ei], w)?;
                    }
                    ei += 1;
                }
                "c" if on("c") && round < nix_runs => start_load_db(env, &store, &probe, w)?,
                _ => {}
            }
        }
        println!(
            "# round {round}: {} (load average {})",
            ways.iter()
                .zip(&before)
                .map(|((_, w), &k)| w.total.get(k).map_or("-".to_string(), |t| format!("{t:.3}s")))
                .collect::<Vec<_>>()
                .join(", "),
            loadavg()
        );
    }
    let ways: Vec<Way> = ways.into_iter().map(|(_, w)| w).collect();
    report_startup(&ways, n, &env.nix_version);
    report_index_sizes(&store, &state, &index)
}

/// Way (a): import into a fresh state dir, serve, answer.
fn start_import(env: &Env, store: &Store, state: &Path, probe: &str, w: &mut Way) -> Result<()> {
    let t0 = Instant::now();
    let imp = import_ours(env, store, state)?;
    let d = start_ours(env, store, state)?;
    w.sock.push(t0.elapsed().as_secs_f64());
    first_answer(&d, probe)?;
    w.total.push(t0.elapsed().as_secs_f64());
    w.prep.push(imp);
    w.cpu.push(d.cpu());
    Ok(())
}

/// Way (c): Nix's `--load-db`, `nix-daemon`, answer.
fn start_load_db(env: &Env, store: &Store, probe: &str, w: &mut Way) -> Result<()> {
    let t0 = Instant::now();
    let load = load_db_nix(env, store)?;
    let d = start_nix(env, store)?;
    w.sock.push(t0.elapsed().as_secs_f64());
    first_answer(&d, probe)?;
    w.total.push(t0.elapsed().as_secs_f64());
    w.prep.push(load);
    w.cpu.push(d.cpu());
    Ok(())
}

fn report_startup(ways: &[Way], n: usize, nix: &str) {
    println!();
    println!("## start-up, {n} paths: lower mounted (page cache warm) → first QueryPathInfo answered");
    println!(
        "| way | median | min–max | runs | of which import / load-db / mount (median) \
         | socket ready (median) | daemon CPU at first answer (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for w in ways.iter().filter(|w| !w.total.is_empty()) {
        println!(
            "| {} | {:.3} s | {:.3}–{:.3} s | {} | {} | {} | {} |",
            w.label,
            w.med(),
            w.min(),
            w.max(),
            w.total.len(),
            med_or_dash(&w.prep),
            med_or_dash(&w.sock),
            med_or_dash(&w.cpu),
        );
    }
    println!(
        "| snix (snix-store daemon) | not measured: filling it takes `snix-store copy` of every path \
         (tests/snix/run runs the e2e scenarios against it) | | | | | |"
    );
    let (a, c) = (&ways[0], &ways[ways.len() - 1]);
    if !a.total.is_empty() && !c.total.is_empty() {
        println!("# ratio (medians): Nix/(a) {:.2}×; Nix is {nix}", c.med() / a.med());
    }
}

fn report_index_sizes(store: &Store, state: &Path, image_index: &Path) -> Result<()> {
    let n = store.paths.len() as f64;
    let nix_db = store.root.join("nix/var/nix/db/db.sqlite");
    println!();
    println!("## index size, {} paths", store.paths.len());
    println!("| index | bytes | bytes per path | ÷ Nix's db.sqlite |");
    println!("|---|---|---|---|");
    let nix = db_bytes(&nix_db) as f64;
    for (label, bytes) in [
        (
            "ours, state dir (index.sqlite + WAL, after import)",
            db_bytes(&state.join("index.sqlite")),
        ),
        ("ours, in the image (.snix-lower-store/index)", db_bytes(image_index)),
        ("Nix's db.sqlite (+ WAL) after nix-store --load-db", nix as u64),
    ] {
        if bytes == 0 {
            println!("| {label} | not measured in this run (its way was not timed) | | |");
            continue;
        }
        println!(
            "| {label} | {bytes} | {:.0} | {:.2} |",
            bytes as f64 / n,
            if nix > 0.0 { bytes as f64 / nix } else { f64::NAN }
        );
    }
    Ok(())
}

/// Bytes the directory occupies on disk (`du -s -B1`) and its files' lengths.
fn dir_bytes(dir: &Path) -> Result<(u64, u64)> {
    let du = |extra: &[&str]| -> Result<u64> {
        let out = sh_ok(Command::new("du").args(["-s", "-B1"]).args(extra).arg(dir))?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("du printed no size")
    };
    Ok((du(&[])?, du(&["--apparent-size"])?))
}

/// `--image-sizes N`: the generated store (objects + its own index) as a
/// directory, as erofs images (uncompressed, lz4, lz4hc with tail packing,
/// with deduplication where mkfs.erofs has it) and as squashfs images.
pub(crate) fn mode_image_sizes(env: &Env, args: &Args, n: usize) -> Result<()> {
    let store = startup_store(env, args, n)?;
    let index = ensure_image_index(env, &store)?;
    let dir = store.store_dir();
    let (disk, apparent) = dir_bytes(&dir)?;
    let n = store.paths.len() as f64;
    println!(
        "## image size, {} paths (the objects; their index, {} bytes, sits beside the store dir)",
        store.paths.len(),
        db_bytes(&index)
    );
    println!("| form | bytes | bytes per path | ÷ directory on disk | made in |");
    println!("|---|---|---|---|---|");
    println!("| directory on ext4 (du) | {disk} | {:.0} | 1.00 | |", disk as f64 / n);
    println!(
        "| … sum of file lengths (du --apparent-size) | {apparent} | {:.0} | {:.2} | |",
        apparent as f64 / n,
        apparent as f64 / disk as f64
    );
    let out = env.work.join("images/sizes.img");
    std::fs::create_dir_all(out.parent().unwrap())?;
    let variants = image_variants(&out, &dir);
    let erofs_version = make_images(variants, &out, n, disk)?;
    let _ = std::fs::remove_file(&out);
    println!("# tools: {erofs_version}; {}", tool_version("mksquashfs", "-version"));
    Ok(())
}

/// The image-making commands to time, each writing `out` from `dir`: the
/// erofs variants (a table row instead where mkfs.erofs is missing) and the
/// squashfs ones.
fn image_variants(out: &Path, dir: &Path) -> Vec<(String, Command)> {
    let mut variants: Vec<(String, Command)> = Vec::new();
    if let Some(why) = erofs_unavailable() {
        println!("| erofs | {why} | | | |");
    } else {
        let base = ["-T1", "--all-root"];
        for (label, opts) in [
            ("erofs, uncompressed", vec![]),
            (
                "erofs, uncompressed, 4 KiB chunks deduplicated",
                vec!["--chunksize=4096"],
            ),
            ("erofs, lz4", vec!["-zlz4"]),
            (
                "erofs, lz4hc level 12 + ztailpacking (mk-lower-image's default)",
                vec!["-zlz4hc,12", "-Eztailpacking"],
            ),
            (
                "erofs, lz4hc 12 + ztailpacking + dedupe",
                vec!["-zlz4hc,12", "-Eztailpacking", "-Ededupe"],
            ),
        ] {
            let mut c = Command::new("mkfs.erofs");
            c.args(base).args(opts).arg(out).arg(dir);
            variants.push((label.to_string(), c));
        }
    }
    for (label, comp) in [
        ("squashfs, uncompressed", None),
        ("squashfs, gzip (default)", Some("gzip")),
        ("squashfs, zstd", Some("zstd")),
        ("squashfs, xz", Some("xz")),
    ] {
        let mut c = Command::new("mksquashfs");
        c.arg(dir)
            .arg(out)
            .args(["-noappend", "-all-root", "-no-progress", "-quiet"]);
        match comp {
            Some(k) => c.args(["-comp", k]),
            None => c.args(["-noI", "-noD", "-noF", "-noX"]),
        };
        variants.push((label.to_string(), c));
    }
    variants
}

/// Runs each variant and prints its row (size, per path of `n`, against
/// the directory's `disk` bytes, time); returns mkfs.erofs's banner.
fn make_images(variants: Vec<(String, Command)>, out: &Path, n: f64, disk: u64) -> Result<String> {
    let mut erofs_version = String::new();
    for (label, mut c) in variants {
        let _ = std::fs::remove_file(out);
        let t0 = Instant::now();
        let o = sh_ok(&mut c)?;
        let secs = t0.elapsed().as_secs_f64();
        if label.starts_with("erofs") && erofs_version.is_empty() {
            erofs_version = String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
        }
        if label.contains("dedupe") && !erofs_dedupes(&erofs_version) {
            println!("| {label} | not available: {erofs_version} ignores -Ededupe (needs erofs-utils 1.6+) | | | |");
            continue;
        }
        let b = std::fs::metadata(out)?.len();
        println!(
            "| {label} | {b} | {:.0} | {:.2} | {secs:.1} s |",
            b as f64 / n,
            b as f64 / disk as f64
        );
    }
    Ok(erofs_version)
}

/// Whether the banner `mkfs.erofs X.Y` names a version with `-Ededupe` (1.6+).
fn erofs_dedupes(banner: &str) -> bool {
    let v = banner.split_whitespace().nth(1).unwrap_or("");
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (1, 6)
}

fn tool_version(tool: &str, flag: &str) -> String {
    Command::new(tool)
        .arg(flag)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{tool}: not found"))
}
