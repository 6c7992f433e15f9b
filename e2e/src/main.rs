//! `snix-lower-store-e2e`: runs real Nix clients (Nix 2.8 from Debian
//! bookworm, Nix 2.26 from Debian trixie, Nix 2.34 from Debian sid, each in
//! its own chroot) against `snix-lower-store` and against Nix's own daemon
//! serving the same lower store, including Nix's `local-overlay` store on a
//! real OverlayFS mount. Nix 2.8 has no local-overlay store: it is a parity
//! client, compared with its own daemon on the lower store it made; its
//! local-overlay scenarios are reported `N/A`, never run or skipped.
//!
//! The binary re-executes itself in private mount and PID namespaces, so
//! every mount and every daemon it starts disappears with it, even on a
//! crash. Output: one `PASS`/`FAIL`/`SKIP`/`N/A` line per scenario, a summary, and
//! a non-zero exit status if anything failed. With `CI=true`, a missing root
//! file system or a failed mount is a failure, never a skip.

mod ctx;
mod daemons;
mod fixture;
mod images;
mod readonly;
mod report;
mod scenarios;

/// The test bed's commands and root file systems, under the names the
/// suite's modules use; `/e2e` is where the work directory appears inside
/// every chroot.
mod rootfs {
    pub use testbed::cmd::{capture, host, shq, tail, Output};
    pub use testbed::rootfs::{Feature, Rootfs};
    pub const CHROOT_WORK: &str = "/e2e";
}

use anyhow::{bail, Context, Result};
use report::{Report, Verdict};
use rootfs::Rootfs;
use std::path::PathBuf;
use std::time::Instant;
use testbed::mounts;

const NS_MARKER: &str = "SNIX_LOWER_STORE_E2E_IN_NAMESPACE";

const USAGE: &str = "usage: snix-lower-store-e2e [options]
  --daemon PATH         snix-lower-store binary (default: next to this binary;
                        env SNIX_LOWER_STORE_BIN)
  --rootfs-cache DIR    provisioned root file systems (default:
                        /var/cache/snix-lower-store/rootfs; env SNIX_LOWER_STORE_ROOTFS_CACHE)
  --suites LIST         comma-separated Debian suites to use (default: trixie,sid,bookworm)
  --only SUBSTRING      run only scenarios whose name contains SUBSTRING (repeatable)
  --baseline-only       only run scenarios against Nix's own daemon
  --work DIR            keep the work directory in DIR (default: a tmpfs, discarded)
  --list                print scenario names without running them
  --snix-dir DIR        real snix binaries (DIR/snix-store, DIR/nix-daemon; or env
                        SNIX_STORE_BIN and SNIX_NIX_DAEMON_BIN): adds the ours-snix
                        flavour and the snix-nix-daemon checks (tests/snix/run)
environment: CI=true turns every skip caused by the environment into a failure";

pub struct Options {
    pub daemon: Option<PathBuf>,
    pub cache: PathBuf,
    pub suites: Vec<String>,
    pub only: Vec<String>,
    pub baseline_only: bool,
    pub work: Option<PathBuf>,
    pub list: bool,
    pub ci: bool,
    /// Real snix binaries, when given.
    pub snix: Option<ctx::SnixHost>,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        daemon: std::env::var_os("SNIX_LOWER_STORE_BIN").map(PathBuf::from),
        cache: testbed::rootfs::cache_dir(),
        suites: vec!["trixie".into(), "sid".into(), "bookworm".into()],
        only: vec![],
        baseline_only: false,
        work: None,
        list: false,
        ci: std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false),
        snix: match (
            std::env::var_os("SNIX_STORE_BIN"),
            std::env::var_os("SNIX_NIX_DAEMON_BIN"),
        ) {
            (Some(store), Some(nix_daemon)) => Some(ctx::SnixHost {
                store: store.into(),
                nix_daemon: nix_daemon.into(),
            }),
            _ => None,
        },
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--daemon" => o.daemon = Some(val()?.into()),
            "--rootfs-cache" => o.cache = val()?.into(),
            "--suites" => o.suites = val()?.split(',').map(str::to_string).collect(),
            "--only" => o.only.push(val()?),
            "--baseline-only" => o.baseline_only = true,
            "--work" => o.work = Some(val()?.into()),
            "--list" => o.list = true,
            "--snix-dir" => {
                let d = PathBuf::from(val()?);
                o.snix = Some(ctx::SnixHost {
                    store: d.join("snix-store"),
                    nix_daemon: d.join("nix-daemon"),
                });
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.daemon.is_none() {
        let me = std::env::current_exe()?;
        o.daemon = me.parent().map(|d| d.join("snix-lower-store"));
    }
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("relay") {
        if let Err(e) = scenarios::relay(&args[1..]) {
            eprintln!("relay: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(2);
        }
    };
    if !opts.list {
        let why = "it mounts OverlayFS and uses chroot";
        testbed::namespace::enter_private("snix-lower-store-e2e", NS_MARKER, testbed::namespace::Pid::Private, why);
    }
    let started = Instant::now();
    let mut report = Report {
        filters: opts.only.clone(),
        ..Default::default()
    };
    if let Err(e) = run(&opts, &mut report) {
        report.setup_problem("setup", &format!("{e:#}"), true);
    }
    report.print_summary(started.elapsed());
    std::process::exit(if report.count(Verdict::Fail) > 0 { 1 } else { 0 });
}

/// A new, uniquely named directory under the temp dir (mkdtemp) for the
/// work tmpfs. Not named by pid: inside the suite's PID namespace every run
/// is pid 1, so two concurrent runs would share the mount point, and the
/// first to finish would remove it under the other (its tmpfs vanishes).
fn unique_work_dir() -> Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // As mkdtemp(3): a new name, created atomically (mkdir fails on an
    // existing one), mode 0700.
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("snix-lower-store-e2e.{pid}.{nanos:x}{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => bail!("cannot create a work directory {}: {e}", dir.display()),
        }
    }
    bail!(
        "cannot create a work directory in {}: 100 names taken",
        std::env::temp_dir().display()
    )
}

fn run(opts: &Options, report: &mut Report) -> Result<()> {
    if opts.list {
        for n in scenarios::names(&opts.suites, opts.snix.is_some()) {
            println!("{n}");
        }
        return Ok(());
    }
    let mut roots: Vec<Rootfs> = Vec::new();
    for suite in &opts.suites {
        let name = format!("setup/rootfs [{suite}]");
        match Rootfs::open(suite, &opts.cache.join(suite)) {
            Ok(fs) => roots.push(fs),
            Err(e) => report.setup_problem(&name, &format!("{e:#}"), opts.ci),
        }
    }
    if roots.is_empty() {
        bail!("no usable Nix root file system");
    }
    let ours_bin = if opts.baseline_only {
        None
    } else {
        let bin = opts.daemon.clone().context("no snix-lower-store binary given")?;
        if !bin.exists() {
            report.setup_problem(
                "setup/daemon-binary",
                &format!(
                    "{} does not exist (build with cargo build --release -p snix-lower-store)",
                    bin.display()
                ),
                true,
            );
            None
        } else {
            Some(bin)
        }
    };
    let (work, tmpfs) = match &opts.work {
        Some(w) => (w.clone(), false),
        None => (unique_work_dir()?, true),
    };
    let mut ctx = ctx::Ctx::new(work.clone(), tmpfs, roots, ours_bin.as_deref(), opts.ci)
        .context("setting up the work directory and chroot mounts failed")?;
    if let Some(snix) = &opts.snix {
        ctx.install_snix(snix)
            .context("the snix binaries (--snix-dir) cannot be used")?;
    }
    let res = scenarios::run_all(&ctx, opts, report);
    drop(ctx);
    // Every daemon is stopped by now; a panic is a defect even if its scenario passed.
    let panics = daemons::panic_lines();
    if !panics.is_empty() {
        let why = format!(
            "our daemons logged {} panic line(s): {}",
            panics.len(),
            panics.join(" | ")
        );
        report.setup_problem("daemons/no-panic", &why, true);
    }
    if tmpfs {
        let _ = std::fs::remove_dir(&work);
    }
    res
}
