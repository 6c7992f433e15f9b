//! Part package: nix/package.nix's source set (lib.fileset.toSource, real
//! store), built and tested as buildRustPackage does: cargo build / cargo
//! test --offline --locked with the package's flags and the derivation's
//! env, no network, not as root, HOME=/homeless-shelter, vendored crates.
//!
//! Invariants: the target dir is only ever written by the build user (a
//! root-owned one is refused, not reused); a new source set is copied afresh
//! (its files are newer than every artifact, so cargo rebuilds).

use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::proc::{cmd, glob_dir, head, oneline, run, run_logged, s, tail1};
use crate::rootfs::{as_builder, in_rootfs, NIX_STORE_ARGS};
use crate::Ctx;

pub(crate) const RUST_TARGET: &str = "x86_64-unknown-linux-gnu";
const BUILDER: &str = "nobody:nogroup";

/// nix/package.nix called with the real lib (toSource copies into the chroot
/// store) and a stand-in buildRustPackage that returns its arguments.
const EXPR: &str = r#"let
  lib = import /mnt/nixpkgs/lib;
  args = import /mnt/src/nix/package.nix { inherit lib; rustPlatform.buildRustPackage = a: a; };
  get = n: d: args.${n} or d;
in {
  src = "${args.src}";
  cargoBuildFlags = get "cargoBuildFlags" [ ];
  cargoTestFlags = get "cargoTestFlags" [ ];
  checkFlags = get "checkFlags" [ ];
  buildType = get "buildType" "release";
  checkType = get "checkType" (get "buildType" "release");
  buildNoDefaultFeatures = get "buildNoDefaultFeatures" false;
  buildFeatures = get "buildFeatures" [ ];
  doCheck = get "doCheck" true;
  env = get "env" { };
}"#;

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

/// cargoBuildHook's and cargoCheckHook's flags, doCheck, the derivation's env.
pub(crate) fn flags(a: &Value) -> (Vec<String>, Vec<String>, bool, Vec<String>) {
    let common: Vec<String> = ["-j", "2", "--target", RUST_TARGET, "--offline", "--locked"]
        .map(String::from)
        .to_vec();
    let mut build = common.clone();
    let bt = a["buildType"].as_str().unwrap_or("release");
    if bt != "debug" {
        build.extend(["--profile".into(), bt.into()]);
    }
    if a["buildNoDefaultFeatures"] == Value::Bool(true) {
        build.push("--no-default-features".into());
    }
    let feats = strs(&a["buildFeatures"]);
    if !feats.is_empty() {
        build.push(format!("--features={}", feats.join(",")));
    }
    build.extend(strs(&a["cargoBuildFlags"]));
    let mut test = common;
    let ct = a["checkType"].as_str().unwrap_or("release");
    if ct != "debug" {
        test.extend(["--profile".into(), ct.into()]);
    }
    test.extend(strs(&a["cargoTestFlags"]));
    test.extend(["--".into(), "--test-threads=2".into()]);
    test.extend(strs(&a["checkFlags"]));
    let env: Vec<String> = a["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), String::from)))
                .collect()
        })
        .unwrap_or_default();
    (build, test, a["doCheck"] != Value::Bool(false), env)
}

pub(crate) fn part(ctx: &mut Ctx) {
    let Some(a) = source_set(ctx) else { return };
    if !vendor(ctx) {
        return;
    }
    let target = &ctx.pkg_target;
    let owner = run(&mut cmd(&["stat", "-c", "%U", s(target)])).out();
    if target.exists() && owner != "nobody" {
        let why = format!(
            "{} is not owned by nobody; remove it (it must never hold root-built files)",
            target.display()
        );
        ctx.r.fail("1 package: target dir", &why);
        return;
    }
    let _ = fs::create_dir_all(target);
    run(&mut cmd(&["chown", BUILDER, s(target)]));
    build_and_test(ctx, &a);
}

/// Evaluates the source set and copies it out of the store; the package's
/// arguments with `srcdir` added.
fn source_set(ctx: &mut Ctx) -> Option<Value> {
    let mut args: Vec<&str> = vec!["nix-instantiate"];
    args.extend(NIX_STORE_ARGS);
    args.extend(["--read-write-mode", "--eval", "--strict", "--json", "--expr", EXPR]);
    let o = run(&mut in_rootfs(ctx, "trixie", &args));
    let _ = fs::write(ctx.t.join("package.json"), &o.stdout);
    let mut a: Value = match serde_json::from_str(&o.stdout) {
        Ok(v) if o.ok => v,
        _ => {
            let check = "1 package: evaluate nix/package.nix's source set (lib.fileset.toSource)";
            ctx.r.fail(check, &tail1(&o.stderr, 8));
            return None;
        }
    };
    let src = a["src"].as_str().unwrap_or("").to_string();
    let base = Path::new(&src)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = format!("{}-src", s(&ctx.pkg_target));
    let srcdir = format!("{parent}/{base}");
    if !Path::new(&srcdir).is_dir() {
        let _ = fs::remove_dir_all(&parent);
        let _ = fs::create_dir_all(&parent);
        let tmp = format!("{srcdir}.tmp");
        let from = format!("{}{src}", s(&ctx.t.join("nixroot")));
        run(&mut cmd(&["cp", "-r", "--preserve=mode", &from, &tmp]));
        run(&mut cmd(&["chmod", "-R", "u+w", &tmp]));
        run(&mut cmd(&["chown", "-R", BUILDER, &tmp]));
        let _ = fs::rename(&tmp, &srcdir);
    }
    let files = run(&mut cmd(&["find", &srcdir, "-type", "f"])).stdout.lines().count();
    let top: String = glob_dir(Path::new(&srcdir)).iter().map(|n| format!("{n} ")).collect();
    let detail = format!("{src}: {files} files, top level: {top}");
    ctx.r
        .pass("1 package: source set evaluated and copied out of the store", &detail);
    a["srcdir"] = Value::String(srcdir);
    Some(a)
}

/// Vendored crates for Cargo.lock (what cargoLock.lockFile fetches), made
/// once as root from the registry cache, readable by the builder; the cargo
/// home that points at them.
fn vendor(ctx: &mut Ctx) -> bool {
    let lock = ctx.repo.join("Cargo.lock");
    let sum = run(&mut cmd(&["sha256sum", s(&lock)])).out();
    let hash = sum.split(' ').next().unwrap_or("").to_string();
    let stamp = ctx.vendor.join(".cargo-lock-sha256");
    if fs::read_to_string(&stamp).unwrap_or_default().trim_end_matches('\n') != hash {
        let _ = fs::remove_dir_all(&ctx.vendor);
        let mut c = cmd(&["cargo", "vendor", "--locked", "--versioned-dirs", s(&ctx.vendor)]);
        let o = run(c.current_dir(&ctx.repo));
        if !o.ok {
            ctx.r
                .fail("1 package: cargo vendor for Cargo.lock", &tail1(&o.stderr, 3));
            return false;
        }
        let _ = fs::write(&stamp, format!("{hash}\n"));
        run(&mut cmd(&["chmod", "-R", "a+rX", s(&ctx.vendor)]));
    }
    let home = ctx.t.join("cargo-home");
    let _ = fs::create_dir_all(&home);
    let config = format!(
        "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"{}\"\n\n[net]\noffline = true\n",
        ctx.vendor.display()
    );
    let _ = fs::write(home.join("config.toml"), config);
    run(&mut cmd(&["chmod", "-R", "a+rX", s(&home)]));
    true
}

/// cargoBuildHook and cargoCheckHook, as buildRustPackage runs them.
fn build_and_test(ctx: &mut Ctx, a: &Value) {
    let (build, test, do_check, drv_env) = flags(a);
    let sysroot = run(&mut cmd(&["rustc", "--print", "sysroot"])).out();
    let srcdir = a["srcdir"].as_str().unwrap_or("").to_string();
    // The derivation's env attributes (buildRustPackage exports them to
    // every phase), then the hooks' own settings.
    let mut env: Vec<String> = vec!["env".into()];
    env.extend(drv_env);
    env.push(format!("CARGO_HOME={}", s(&ctx.t.join("cargo-home"))));
    env.push(format!("CARGO_TARGET_DIR={}", s(&ctx.pkg_target)));
    env.extend([
        "CARGO_PROFILE_RELEASE_STRIP=false".into(),
        "CARGO_BUILD_INCREMENTAL=false".into(),
    ]);
    let (bf, tf) = (build.join(" "), test.join(" "));
    let log = ctx.t.join("package-build.log");
    let t0 = Instant::now();
    let args: Vec<String> = env
        .iter()
        .cloned()
        .chain(["cargo".into(), "build".into()])
        .chain(build)
        .collect();
    if run_logged(as_builder(Path::new(&sysroot), &args).current_dir(&srcdir), &log) {
        let name = format!("1 package: cargo build {bf} (not root, no network, HOME=/homeless-shelter)");
        ctx.r.pass(&name, &format!("{}s", t0.elapsed().as_secs()));
    } else {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let errs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("error") || l.starts_with("warning: unused"))
            .collect();
        ctx.r.fail(
            &format!("1 package: cargo build {bf}"),
            &format!("{} {}", oneline(&head(&errs.join("\n"), 3)), tail1(&text, 3)),
        );
        return;
    }
    if !do_check {
        ctx.r.fail(
            "1 package: checkPhase",
            "doCheck is false: the package's tests never run",
        );
        return;
    }
    let log = ctx.t.join("package-test.log");
    let t0 = Instant::now();
    let args: Vec<String> = env
        .into_iter()
        .chain(["cargo".into(), "test".into()])
        .chain(test)
        .collect();
    let ok = run_logged(as_builder(Path::new(&sysroot), &args).current_dir(&srcdir), &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    if ok {
        let (p, f) = test_totals(&text);
        let detail = format!("{}s, {p} passed, {f} failed", t0.elapsed().as_secs());
        ctx.r.pass(&format!("1 package: cargo test {tf}"), &detail);
    } else {
        let errs: Vec<&str> = text
            .lines()
            .filter(|l| {
                (l.starts_with("test ") && l.contains(" FAILED"))
                    || l.starts_with("error")
                    || l.starts_with("failures:")
            })
            .collect();
        ctx.r.fail(
            &format!("1 package: cargo test {tf}"),
            &format!("{} {}", oneline(&head(&errs.join("\n"), 5)), tail1(&text, 3)),
        );
    }
}

/// The passed and failed counts summed over cargo test's "test result:" lines.
fn test_totals(log: &str) -> (u64, u64) {
    let (mut p, mut f) = (0, 0);
    for l in log.lines().filter(|l| l.starts_with("test result:")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        p += w.get(3).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        f += w.get(5).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    }
    (p, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_build_rust_package() {
        let a = serde_json::json!({"buildType": "release", "checkType": "release", "buildNoDefaultFeatures": false,
            "buildFeatures": ["x"], "cargoBuildFlags": ["-p", "a"], "cargoTestFlags": [], "checkFlags": ["--skip", "b"],
            "doCheck": true, "env": {"K": "v"}});
        let (b, t, check, env) = flags(&a);
        assert!(b.join(" ").ends_with("--profile release --features=x -p a"));
        assert!(t.join(" ").ends_with("--profile release -- --test-threads=2 --skip b"));
        assert!(check);
        assert_eq!(env, ["K=v"]);
        assert_eq!(
            test_totals("test result: ok. 5 passed; 1 failed;\ntest result: ok. 2 passed; 0 failed;"),
            (7, 1)
        );
    }
}
