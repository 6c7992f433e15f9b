//! Part eval: the flake's module in every VM test node (through nixpkgs'
//! real qemu-vm.nix), every README example and the cases of cases.nix, with
//! lib.evalModules over nixpkgs' real nix.nix, filesystems.nix (+ erofs,
//! squashfs, overlayfs), systemd/initrd.nix and assertions.nix, stand-ins for
//! the rest (stand-ins.nix); misspelt options must fail for that option; the
//! claims of checks.nix. Writes scratch/eval.json, which the other parts read.
//!
//! Invariants: one line per check of eval.nix's JSON; a configuration with a
//! misspelt option passes only if the module system's error names it.

use std::fs;

use serde_json::Value;

use crate::proc::{run, tail};
use crate::rootfs::{in_rootfs, NIX_STORE_ARGS};
use crate::Ctx;

/// The README's and the docs' markdown files, README first, then
/// docs/src/*.md by name.
fn doc_texts(ctx: &Ctx) -> String {
    let mut files = vec![ctx.repo.join("README.md")];
    let mut docs: Vec<_> = fs::read_dir(ctx.repo.join("docs/src"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    docs.retain(|p| p.extension().is_some_and(|x| x == "md"));
    docs.sort();
    files.extend(docs);
    files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ```nix blocks of the README and the docs, one file each under
/// scratch/readme/; returns their names in order (a block with no line gets
/// no file).
fn readme_blocks(ctx: &Ctx) -> Vec<String> {
    let dir = ctx.t.join("readme");
    let _ = fs::create_dir_all(&dir);
    let text = doc_texts(ctx);
    let (mut n, mut inblock, mut names) = (0, false, Vec::<String>::new());
    let mut bodies: Vec<(String, String)> = vec![];
    for line in text.lines() {
        if line == "```nix" {
            n += 1;
            inblock = true;
        } else if line.starts_with("```") {
            inblock = false;
        } else if inblock {
            let name = format!("block-{n}.nix");
            match bodies.last_mut() {
                Some((last, body)) if *last == name => body.push_str(&format!("{line}\n")),
                _ => bodies.push((name, format!("{line}\n"))),
            }
        }
    }
    for (name, body) in bodies {
        let _ = fs::write(dir.join(&name), body);
        names.push(name);
    }
    names
}

pub(crate) fn part(ctx: &mut Ctx) {
    let blocks = readme_blocks(ctx);
    let list: String = blocks.iter().map(|b| format!("/mnt/work/readme/{b} ")).collect();
    let list = format!("[ {list}]");
    ctx.r.info(&format!("{} README/docs NixOS block(s)", blocks.len()));
    let mut args: Vec<&str> = vec!["nix-instantiate"];
    args.extend(NIX_STORE_ARGS);
    args.extend([
        "--read-write-mode",
        "--eval",
        "--strict",
        "--json",
        "/mnt/src/tests/nixos-local/eval.nix",
        "-A",
    ]);
    args.extend([
        "json",
        "--arg",
        "repo",
        "/mnt/src",
        "--arg",
        "nixpkgs",
        "/mnt/nixpkgs",
        "--arg",
        "readmeBlocks",
    ]);
    args.push(&list);
    let o = run(&mut in_rootfs(ctx, "trixie", &args));
    let _ = fs::write(ctx.t.join("eval.json"), &o.stdout);
    let _ = fs::write(ctx.t.join("eval.err"), &o.stderr);
    if !o.ok {
        ctx.r.fail("eval: tests/nixos-local/eval.nix", &tail(&o.stderr, 20));
        return;
    }
    let r: Value = match serde_json::from_str(&o.stdout) {
        Ok(v) => v,
        Err(e) => {
            ctx.r.fail(
                "eval: no check reported",
                &format!("eval.json ({e}): {}", head_chars(&o.stdout, 300)),
            );
            return;
        }
    };
    report_checks(ctx, &r, &o.stdout);
    misspelt(ctx, &r, &list);
}

fn head_chars(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// One PASS/FAIL line per check of eval.nix.
fn report_checks(ctx: &mut Ctx, r: &Value, raw: &str) {
    let checks = r["checks"].as_array().cloned().unwrap_or_default();
    for c in &checks {
        let name = c["name"].as_str().unwrap_or("?");
        if c["ok"].as_bool() == Some(true) {
            ctx.r.pass(name, "");
        } else {
            let detail = c["detail"].as_str().unwrap_or("").replace('\n', " | ");
            ctx.r.fail(name, &head_chars(&detail, 1500));
        }
    }
    if checks.is_empty() {
        ctx.r.fail(
            "eval: no check reported",
            &format!("eval.json: {}", head_chars(raw, 300)),
        );
    }
}

/// The error of each configuration that does not evaluate; a case with a
/// misspelt option must fail for that option, as the module system says.
fn misspelt(ctx: &mut Ctx, r: &Value, list: &str) {
    let empty = serde_json::Map::new();
    let configs = r["configs"].as_object().unwrap_or(&empty);
    let broken: Vec<&String> = configs
        .iter()
        .filter(|(_, c)| c["evaluates"] != Value::Bool(true))
        .map(|(n, _)| n)
        .collect();
    for name in broken {
        let err = explain(ctx, name, list);
        let opt = r["misspelt"][name.as_str()].as_str().unwrap_or("");
        let check = format!("typed: {name} fails for its misspelt option");
        if opt.is_empty() {
            ctx.r.info(&format!("why '{name}' does not evaluate: {err}"));
        } else if err.contains(&format!("The option `{opt}' does not exist")) {
            ctx.r.pass(&check, &err);
        } else {
            ctx.r.fail(&check, &format!("the error does not name `{opt}': {err}"));
        }
    }
    // Every misspelt case must have been refused (checks.nix says so too).
    for (n, _) in r["misspelt"].as_object().unwrap_or(&empty) {
        if configs
            .get(n)
            .map(|c| c["evaluates"] == Value::Bool(true))
            .unwrap_or(false)
        {
            ctx.r.info(&format!("(misspelt option accepted: {n})"));
        }
    }
}

/// eval.nix's `explain NAME`: from the last "error:" line on, on one line,
/// spaces squeezed, at most 600 characters.
fn explain(ctx: &Ctx, name: &str, list: &str) -> String {
    let expr = format!(
        "(import /mnt/src/tests/nixos-local/eval.nix {{ repo = /mnt/src; nixpkgs = /mnt/nixpkgs; readmeBlocks = {list}; }}).explain \"{name}\""
    );
    let mut args: Vec<&str> = vec!["nix-instantiate"];
    args.extend(NIX_STORE_ARGS);
    args.extend(["--read-write-mode", "--eval", "--strict", "--expr", &expr]);
    let out = run(&mut in_rootfs(ctx, "trixie", &args)).all();
    let mut buf = String::new();
    for line in out.lines() {
        if line.contains("error:") {
            buf.clear();
        }
        buf.push(' ');
        buf.push_str(line);
    }
    let squeezed = buf.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    head_chars(&format!(" {squeezed}"), 600)
}
