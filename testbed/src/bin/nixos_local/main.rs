//! snix-lower-store-nixos-local: the NixOS side of snix-lower-store proven on
//! this machine with real Nix (the Debian roots of .ci/provision-nix-rootfs)
//! and nixpkgs' own lib and unit rendering. Parts (default: all, in this
//! order): eval scripts render package boot switch rotate; see each module's
//! header for what it proves. Also `nix-conf` and `boot-defects` (the checks
//! of tests/nixos-local/nix-conf-check and boot-defects-check).
//!
//! Environment: SNIX_NIXPKGS (default ../shared/nixpkgs beside the repo),
//! SNIX_LOWER_STORE_BIN, SNIX_LOWER_STORE_ROOTFS_CACHE, SNIX_PACKAGE_TARGET,
//! SNIX_CARGO_VENDOR, CI=true (a missing prerequisite is a FAIL), KEEP=1
//! (keep the scratch directory).
//!
//! Invariants: one PASS/FAIL/SKIP line per check, named "<case>: <check>";
//! a summary with the checks and duration of each part and every failure as
//! part/case/check; exit status 1 on a failure; needs root; the cached root
//! file systems are never written.

mod boot;
mod checks;
mod eval;
mod image;
mod nspawn;
mod package;
mod proc;
mod render;
mod rootfs;
mod rotate;
mod scripts;
mod switch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use testbed::report::Report;

pub(crate) const PARTS: [&str; 7] = ["eval", "scripts", "render", "package", "boot", "switch", "rotate"];
const EXTRA_PARTS: [&str; 2] = ["nix-conf", "boot-defects"];

/// Everything the parts share: paths, settings, the report, caches.
pub(crate) struct Ctx {
    pub(crate) repo: PathBuf,
    pub(crate) here: PathBuf,
    pub(crate) nixpkgs: PathBuf,
    pub(crate) rootfs_cache: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) pkg_target: PathBuf,
    pub(crate) vendor: PathBuf,
    pub(crate) pkg_bin: PathBuf,
    /// The scratch directory.
    pub(crate) t: PathBuf,
    pub(crate) r: Report,
    pub(crate) boots: u32,
    nix_versions: HashMap<String, String>,
}

fn env_or(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
}

/// The repository: the working directory when it holds tests/nixos-local,
/// else the one this binary was built from.
fn repo_dir() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("tests/nixos-local/eval.nix").is_file() {
        return cwd;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    built.canonicalize().unwrap_or(built)
}

impl Ctx {
    fn new(t: PathBuf) -> Ctx {
        let repo = repo_dir();
        let nixpkgs = env_or("SNIX_NIXPKGS", repo.join("../shared/nixpkgs"));
        let nixpkgs = nixpkgs.canonicalize().unwrap_or(nixpkgs);
        let pkg_target = env_or(
            "SNIX_PACKAGE_TARGET",
            "/var/cache/snix-lower-store-package-target".into(),
        );
        Ctx {
            here: repo.join("tests/nixos-local"),
            bin: env_or("SNIX_LOWER_STORE_BIN", repo.join("target/release/snix-lower-store")),
            rootfs_cache: testbed::rootfs::cache_dir(),
            vendor: env_or("SNIX_CARGO_VENDOR", "/var/cache/snix-lower-store-vendor".into()),
            pkg_bin: pkg_target.join(format!("{}/release/snix-lower-store", package::RUST_TARGET)),
            pkg_target,
            repo,
            nixpkgs,
            t,
            r: Report::new(std::env::var("CI").as_deref() == Ok("true")),
            boots: 0,
            nix_versions: HashMap::new(),
        }
    }

    /// The binary the units run: the package build's when that part built
    /// it, else SNIX_LOWER_STORE_BIN.
    pub(crate) fn unit_bin(&self) -> PathBuf {
        if proc::is_exec(&self.pkg_bin) {
            self.pkg_bin.clone()
        } else {
            self.bin.clone()
        }
    }

    /// The eval part's result, when it ran (FAIL naming `what` otherwise).
    pub(crate) fn eval_json(&mut self, what: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.t.join("eval.json")).unwrap_or_default();
        match serde_json::from_str(&text) {
            Ok(v) if !text.is_empty() => Some(v),
            _ => {
                self.r.fail(
                    &format!("{what}: needs the eval part's result"),
                    "run the eval part too",
                );
                None
            }
        }
    }

    /// "Nix 2.26.3" for root `name` (asked once).
    pub(crate) fn nixv(&mut self, name: &str) -> String {
        if let Some(v) = self.nix_versions.get(name) {
            return v.clone();
        }
        let v = rootfs::nix_version(self, name);
        self.nix_versions.insert(name.to_string(), v.clone());
        v
    }
}

fn prereqs(ctx: &mut Ctx) -> bool {
    let uid = proc::run(&mut proc::cmd(&["id", "-u"])).out();
    if uid != "0" {
        ctx.r
            .skip_or_fail("prerequisites", "must run as root (unshare, chroot, systemd-nspawn)");
        return false;
    }
    let mut ok = true;
    for r in ["trixie", "sid"] {
        if !testbed::rootfs::is_ready(&ctx.rootfs_cache.join(r)) {
            let why = format!(
                "{} not provisioned (.ci/provision-nix-rootfs)",
                ctx.rootfs_cache.join(r).display()
            );
            ctx.r.skip_or_fail("prerequisites", &why);
            ok = false;
        }
    }
    if !ctx.nixpkgs.join("lib/default.nix").is_file() || !ctx.nixpkgs.join("nixos/lib/systemd-lib.nix").is_file() {
        let why = format!(
            "no nixpkgs lib/ and nixos/lib/ at {} (set SNIX_NIXPKGS)",
            ctx.nixpkgs.display()
        );
        ctx.r.skip_or_fail("prerequisites", &why);
        ok = false;
    }
    if !ok {
        return false;
    }
    let expr = [
        "nix-instantiate",
        "--eval",
        "--expr",
        "(import /mnt/nixpkgs/lib).version",
    ];
    let v = proc::run(&mut rootfs::in_rootfs(ctx, "trixie", &expr)).all();
    ctx.r.info(&format!("nixpkgs: {} ({v})", ctx.nixpkgs.display()));
    let t = proc::run(&mut rootfs::in_rootfs(ctx, "trixie", &["nix-instantiate", "--version"])).out();
    let s = proc::run(&mut rootfs::in_rootfs(ctx, "sid", &["nix-instantiate", "--version"])).out();
    ctx.r.info(&format!("Nix: {t} (trixie), {s} (sid)"));
    std::fs::create_dir_all(ctx.t.join("nixroot")).is_ok()
}

fn run_part(ctx: &mut Ctx, part: &str) {
    match part {
        "eval" => eval::part(ctx),
        "scripts" => scripts::part(ctx),
        "render" => render::part(ctx),
        "package" => package::part(ctx),
        "boot" => boot::part(ctx),
        "switch" => switch::part(ctx),
        "rotate" => rotate::part(ctx),
        "nix-conf" => checks::nix_conf(ctx),
        "boot-defects" => checks::boot_defects(ctx),
        _ => ctx.r.fail("usage", &format!("unknown part {part}")),
    }
}

fn usage() -> String {
    format!(
        "usage: snix-lower-store-nixos-local [PART...]\n  parts: {} (default: all, in this order); also {}",
        PARTS.join(" "),
        EXTRA_PARTS.join(" ")
    )
}

/// The scratch directory, mode 755 (the container's users read it).
fn scratch() -> Result<PathBuf, String> {
    let o = proc::run(&mut proc::cmd(&["mktemp", "-d", "/tmp/snix-nixos-local.XXXXXX"]));
    if !o.ok {
        return Err(format!("mktemp: {}", o.all()));
    }
    let t = PathBuf::from(o.out());
    proc::run(&mut proc::cmd(&["chmod", "755", proc::s(&t)]));
    Ok(t)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__in-rootfs") => std::process::exit(rootfs::internal_in_rootfs(&args[1..])),
        Some("__as-builder") => std::process::exit(rootfs::internal_as_builder(&args[1..])),
        Some("-h" | "--help") => {
            println!("{}", usage());
            return;
        }
        _ => {}
    }
    if let Some(bad) = args
        .iter()
        .find(|a| !PARTS.contains(&a.as_str()) && !EXTRA_PARTS.contains(&a.as_str()))
    {
        eprintln!("FAIL usage: unknown part {bad}\n{}", usage());
        std::process::exit(2);
    }
    let parts: Vec<String> = if args.is_empty() {
        PARTS.iter().map(|p| p.to_string()).collect()
    } else {
        args
    };
    let t = match scratch() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nixos-local: cannot make a scratch directory: {e}");
            std::process::exit(1);
        }
    };
    let mut ctx = Ctx::new(t);
    let code = if prereqs(&mut ctx) {
        run_parts(&mut ctx, &parts)
    } else {
        ctx.r.summary("nixos-local")
    };
    cleanup(&ctx, code);
    std::process::exit(code);
}

fn run_parts(ctx: &mut Ctx, parts: &[String]) -> i32 {
    for p in parts {
        let (passed, failed) = ctx.r.counts();
        ctx.r.begin(p);
        let t0 = Instant::now();
        run_part(ctx, p);
        ctx.r.end(t0.elapsed(), passed, failed);
    }
    ctx.r.summary("nixos-local")
}

/// The erofs image of the boot part if a failure left it mounted; the
/// scratch directory unless KEEP=1 or something failed.
fn cleanup(ctx: &Ctx, code: i32) {
    let mnt = ctx.t.join("erofs-mnt");
    if proc::run(&mut proc::cmd(&["mountpoint", "-q", proc::s(&mnt)])).ok {
        proc::run(&mut proc::cmd(&["umount", proc::s(&mnt)]));
    }
    if std::env::var("KEEP").as_deref() == Ok("1") || code != 0 {
        println!("nixos-local: scratch kept in {}", ctx.t.display());
    } else {
        let _ = std::fs::remove_dir_all(&ctx.t);
    }
}
