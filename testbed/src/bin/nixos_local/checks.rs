//! Parts nix-conf and boot-defects: the checks of tests/nixos-local/nix-conf-check
//! (the nix.conf the flake's module renders with nixpkgs' real nix.nix, read
//! back by Nix 2.26 and 2.34) and tests/nixos-local/boot-defects-check (the
//! evaluation checks of boot-defects-eval.nix). Not in the default parts:
//! scripts/test.sh runs them as their own steps through those wrappers.
//!
//! Invariants: every case evaluates; Nix reads the user's features and
//! local-overlay-store back from the rendered file.

use std::fs;

use serde_json::Value;

use crate::proc::{run, tail1};
use crate::rootfs::in_rootfs;
use crate::Ctx;

pub(crate) fn nix_conf(ctx: &mut Ctx) {
    let args = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        "/mnt/src/tests/nixos-local/nix-conf-eval.nix",
    ];
    let args: Vec<&str> = args
        .into_iter()
        .chain(["--arg", "repo", "/mnt/src", "--arg", "nixpkgs", "/mnt/nixpkgs"])
        .collect();
    let o = run(&mut in_rootfs(ctx, "trixie", &args));
    let ev: Value = match serde_json::from_str(&o.stdout) {
        Ok(v) if o.ok => v,
        _ => {
            ctx.r.fail(
                "nix-conf: evaluate tests/nixos-local/nix-conf-eval.nix",
                &tail1(&o.stderr, 5),
            );
            return;
        }
    };
    // case, the features the user asked for
    for (name, want) in [
        ("extra-string", "flakes"),
        ("extra-list", "flakes nix-command"),
        ("plain-string", "nix-command flakes"),
    ] {
        let check = format!("nix-conf {name}: the module with nixpkgs' real nix.nix evaluates");
        if ev[name]["ok"] != Value::Bool(true) {
            let why = format!("run: nix-instantiate --eval --strict --arg debug true -A {name} tests/nixos-local/nix-conf-eval.nix for the error");
            ctx.r.fail(&check, &why);
            continue;
        }
        ctx.r.pass(&check, "");
        let dir = ctx.t.join(name);
        let _ = fs::create_dir_all(&dir);
        let _ = fs::write(dir.join("nix.conf"), ev[name]["nixConf"].as_str().unwrap_or(""));
        for r in ["trixie", "sid"] {
            let conf = format!("NIX_CONF_DIR=/mnt/work/{name}");
            let args = [
                "env",
                &conf,
                "NIX_USER_CONF_FILES=/dev/null",
                "NIX_CONFIG=extra-experimental-features = nix-command",
            ];
            let args: Vec<&str> = args
                .into_iter()
                .chain(["nix", "config", "show", "experimental-features"])
                .collect();
            let got = run(&mut in_rootfs(ctx, r, &args)).all();
            let padded = format!(" {got} ");
            let missing: String = want
                .split(' ')
                .chain(["local-overlay-store"])
                .filter(|f| !padded.contains(&format!(" {f} ")))
                .map(|f| format!(" {f}"))
                .collect();
            if missing.is_empty() {
                let v = crate::proc::last_word(&run(&mut in_rootfs(ctx, r, &["nix", "--version"])).stdout);
                let check =
                    format!("nix-conf {name}: Nix {v} reads the rendered nix.conf with {want} and local-overlay-store");
                ctx.r.pass(&check, &got);
            } else {
                let check = format!(
                    "nix-conf {name}: Nix ({r}) reads the rendered nix.conf with {want} and local-overlay-store"
                );
                ctx.r.fail(&check, &format!("missing{missing}; got: {got}"));
            }
        }
    }
}

pub(crate) fn boot_defects(ctx: &mut Ctx) {
    let args = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        "/mnt/src/tests/nixos-local/boot-defects-eval.nix",
    ];
    let args: Vec<&str> = args
        .into_iter()
        .chain(["--arg", "repo", "/mnt/src", "--arg", "nixpkgs", "/mnt/nixpkgs"])
        .collect();
    let o = run(&mut in_rootfs(ctx, "trixie", &args));
    let checks: Vec<Value> = match serde_json::from_str::<Value>(&o.stdout) {
        Ok(Value::Array(a)) if o.ok => a,
        _ => {
            let why = format!(
                "evaluating tests/nixos-local/boot-defects-eval.nix: {}",
                tail1(&o.all(), 8)
            );
            ctx.r.fail("boot-defects-check", &why);
            return;
        }
    };
    for c in checks {
        let name = c["name"].as_str().unwrap_or("?");
        let detail: String = c["detail"].as_str().unwrap_or("").chars().take(1200).collect();
        ctx.r.check(c["ok"] == Value::Bool(true), name, "", &detail);
    }
}
