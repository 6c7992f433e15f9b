//! `snix-lower-store-systemd-local`: the systemd integration of
//! snix-lower-store, the shipped units in `systemd/` and the daemon's side of
//! them (socket activation, sd_notify, journald, idle exit). Run by
//! `tests/systemd/run`, from the repository's root.
//!
//! - a. host, no systemd needed ([`host`]): the daemon under
//!   systemd-socket-activate with a NOTIFY_SOCKET listener, then under a
//!   socket-unit emulation that keeps the listening socket (`sdtest.py
//!   supervise`). Idle exits are awaited (observed in the supervisor's log,
//!   30 s bound), never assumed from a sleep; the one timing-based check (no
//!   exit while clients keep coming) has a margin of 2.5 s per 1.5 s gap.
//! - b. real systemd as PID 1 ([`container`]): the Debian trixie root
//!   (systemd 257, Nix 2.26.3) booted with systemd-nspawn
//!   `--volatile=overlay` (the cached tree is never written), units and
//!   binary bound in, driven with nsenter.
//! - c. systemd-analyze verify (host and container) and security ([`verify`]):
//!   the overall exposure level must not exceed the accepted maximum.
//!
//! One PASS/FAIL line per check, naming the case; exit status 1 on any FAIL.
//! With CI=true a missing prerequisite is a FAIL, otherwise a SKIP. Every
//! step has a timeout. Environment: SNIX_LOWER_STORE_BIN (default
//! target/release/snix-lower-store), SNIX_LOWER_STORE_ROOTFS_CACHE, KEEP=1
//! keeps the scratch directory (kept anyway when a check failed).

mod container;
mod host;
mod verify;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use testbed::cmd::{capture, tail};
use testbed::report::Report;

/// Everything the parts share: binaries, units, the demo lower store.
pub(crate) struct Setup {
    /// The snix-lower-store binary under test.
    pub(crate) bin: PathBuf,
    /// The shipped unit files (`systemd/`).
    pub(crate) units: PathBuf,
    /// tests/systemd/sdtest.py (notify listener, protocol client, supervisor).
    pub(crate) helper: PathBuf,
    /// The trixie root booted in part b.
    pub(crate) rootfs: PathBuf,
    /// The scratch directory.
    pub(crate) tmp: PathBuf,
    /// The demo lower store: DIR/lower/nix/store, DIR/state, DIR/registration.
    pub(crate) demo: PathBuf,
    /// The demo's paths: their count, one with references, its references.
    pub(crate) pick: Option<Pick>,
}

/// What `sdtest.py reg-pick` chose from the demo's registration.
pub(crate) struct Pick {
    pub(crate) npaths: String,
    pub(crate) top: String,
    pub(crate) refs: Vec<String>,
}

impl Setup {
    pub(crate) fn lower(&self) -> PathBuf {
        self.demo.join("lower/nix/store")
    }

    pub(crate) fn t(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
}

/// Whether `prog` is on PATH.
pub(crate) fn have(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The last `n` lines of a file (for FAIL lines).
pub(crate) fn file_tail(p: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// A new, uniquely named scratch directory (mkdtemp), mode 0755.
// mkdtemp(3): the one libc call here (std has no mkdtemp).
#[allow(unsafe_code)]
fn scratch_dir() -> Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::PermissionsExt;
    let template = Path::new("/tmp/snix-lower-store-systemd.XXXXXX");
    let mut buf = std::ffi::CString::new(template.as_os_str().as_bytes())?.into_bytes_with_nul();
    // SAFETY: `buf` is a writable, NUL-terminated template that outlives the call.
    if unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) }.is_null() {
        bail!("cannot create a scratch directory: {}", std::io::Error::last_os_error());
    }
    buf.pop();
    let dir = PathBuf::from(std::ffi::OsString::from_vec(buf));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Makes the demo lower store and picks the paths the checks ask for.
fn demo(s: &mut Setup, r: &mut Report, have_python: bool) -> Result<()> {
    let log = s.t("demo.log");
    let out = capture(
        Command::new("timeout")
            .arg("60")
            .arg(&s.bin)
            .args(["demo", "--dir"])
            .arg(&s.demo)
            .arg("--check"),
    )?;
    std::fs::write(&log, out.combined())?;
    if !out.success() {
        r.fail("demo lower store", &file_tail(&log, 3));
        bail!("no demo lower store");
    }
    capture(Command::new("chmod").args(["-R", "a+rX"]).arg(&s.demo))?.ok()?;
    if have_python {
        let out = capture(
            Command::new("python3")
                .arg(&s.helper)
                .arg("reg-pick")
                .arg(s.demo.join("registration")),
        )?
        .ok()?;
        let lines: Vec<String> = out.stdout().lines().map(str::to_string).collect();
        if lines.len() < 2 {
            bail!("sdtest.py reg-pick printed {:?}", tail(&out.stdout(), 200));
        }
        s.pick = Some(Pick {
            npaths: lines[0].clone(),
            top: lines[1].clone(),
            refs: lines[2..].to_vec(),
        });
    }
    Ok(())
}

/// The parts, in the order of the former shell script: c (host), a, b.
fn run(s: &mut Setup, r: &mut Report) -> Result<()> {
    println!(
        "systemd: binary {}, units {}, scratch {}",
        s.bin.display(),
        s.units.display(),
        s.tmp.display()
    );
    if !s.bin.is_file() {
        r.fail(
            "prerequisites",
            &format!(
                "{} missing (cargo build --release -p snix-lower-store)",
                s.bin.display()
            ),
        );
        return Ok(());
    }
    let have_python = have("python3");
    if !have_python {
        r.skip_or_fail("prerequisites", "python3 not found");
    }
    if demo(s, r, have_python).is_err() {
        return Ok(());
    }
    if have("systemd-analyze") {
        verify::host(s, r)?;
    } else {
        r.skip_or_fail("c: systemd-analyze", "not installed");
    }
    if have_python && have("systemd-socket-activate") {
        host::run(s, r)?;
    } else {
        r.skip_or_fail(
            "a: systemd-socket-activate",
            "systemd-socket-activate or python3 not installed",
        );
    }
    if have_python {
        container::run(s, r)?;
    }
    Ok(())
}

fn main() {
    let started = Instant::now();
    let repo = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut r = Report::new(ci).with_ci_note("CI=true: missing prerequisites fail");
    let tmp = match scratch_dir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("snix-lower-store-systemd-local: {e:#}");
            std::process::exit(2);
        }
    };
    let mut s = Setup {
        bin: std::env::var_os("SNIX_LOWER_STORE_BIN")
            .map_or_else(|| repo.join("target/release/snix-lower-store"), PathBuf::from),
        units: repo.join("systemd"),
        helper: repo.join("tests/systemd/sdtest.py"),
        rootfs: testbed::rootfs::cache_dir().join(testbed::rootfs::SYSTEMD_SUITE),
        demo: tmp.join("demo"),
        tmp,
        pick: None,
    };
    if let Err(e) = run(&mut s, &mut r).context("the harness itself failed") {
        r.fail("harness", &format!("{e:#}"));
    }
    if std::env::var("KEEP").is_ok_and(|v| v == "1") || r.fails() > 0 {
        println!("systemd: logs kept in {}", s.tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&s.tmp);
    }
    println!("systemd: {} failed, {}s", r.fails(), started.elapsed().as_secs());
    std::process::exit(if r.fails() == 0 { 0 } else { 1 });
}
