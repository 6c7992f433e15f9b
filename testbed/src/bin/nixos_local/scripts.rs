//! Part scripts (issue 21): every VM test script after Nix interpolation
//! (eval.json's vmScripts), linted and type-checked as nixpkgs does
//! (pyflakes, mypy; ruff, ty) and the units and paths it names checked
//! against what its nodes render (tests/vm-scripts/check.py).
//!
//! Invariants: the linters run from a venv of tests/vm-scripts/requirements.txt
//! cached by the file's digest and marked ready only when complete;
//! check.py's PASS/FAIL lines are the checks; no line at all is a failure.

use std::fs;
use std::path::{Path, PathBuf};

use crate::proc::{cmd, run, s, tail1};
use crate::Ctx;

/// The first Python among 3.13 candidates that has venv (else python3).
fn pick_python() -> String {
    let mut cands = vec!["python3.13".to_string()];
    let mut pyenv: Vec<String> = fs::read_dir("/root/.pyenv/versions")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    pyenv.sort();
    for v in pyenv.iter().filter(|v| v.starts_with("3.13")) {
        cands.push(format!("/root/.pyenv/versions/{v}/bin/python3"));
    }
    cands.push("python3".into());
    for py in &cands {
        if run(&mut cmd(&[py.as_str(), "-c", "import venv"])).ok {
            return py.clone();
        }
    }
    "python3".into()
}

/// The venv with tests/vm-scripts/requirements.txt (made when missing).
fn venv(ctx: &mut Ctx) -> Option<PathBuf> {
    let req = ctx.repo.join("tests/vm-scripts/requirements.txt");
    let sum = run(&mut cmd(&["sha256sum", s(&req)])).out();
    let dir = PathBuf::from(format!(
        "/var/cache/snix-lower-store/vm-scripts-venv-{}",
        &sum[..16.min(sum.len())]
    ));
    if dir.join(".ready").is_file() {
        return Some(dir);
    }
    let py = pick_python();
    let _ = fs::remove_dir_all(&dir);
    // A venv holds its own path: made where it stays, marked ready last.
    let mut o = run(&mut cmd(&[py.as_str(), "-m", "venv", s(&dir)]));
    if o.ok {
        o = run(&mut cmd(&[s(&dir.join("bin/pip")), "install", "-q", "-r", s(&req)]));
    }
    if !o.ok {
        let name = format!("vm-scripts: venv of tests/vm-scripts/requirements.txt with {py}");
        ctx.r.fail(&name, &tail1(&o.all(), 3));
        return None;
    }
    let _ = fs::write(dir.join(".ready"), "");
    Some(dir)
}

fn version(bin: &Path, words: usize) -> String {
    let v = run(&mut cmd(&[s(bin), "--version"])).all();
    v.split(' ').take(words).collect::<Vec<_>>().join(" ")
}

pub(crate) fn part(ctx: &mut Ctx) {
    if ctx.eval_json("vm-scripts").is_none() {
        return;
    }
    let Some(v) = venv(ctx) else { return };
    let b = v.join("bin");
    ctx.r.info(&format!(
        "{}, {}, pyflakes {}, {}, {}",
        version(&b.join("python"), 9),
        version(&b.join("mypy"), 2),
        version(&b.join("pyflakes"), 1),
        version(&b.join("ruff"), 9),
        version(&b.join("ty"), 9)
    ));
    let (eval, drv) = (ctx.t.join("eval.json"), ctx.nixpkgs.join("nixos/lib/test-driver/src"));
    let prepend = ctx.nixpkgs.join("nixos/lib/test-script-prepend.py");
    let check = ctx.repo.join("tests/vm-scripts/check.py");
    let out_dir = ctx.t.join("vm-scripts");
    let o = run(&mut cmd(&[
        "python3",
        s(&check),
        s(&eval),
        s(&drv),
        s(&prepend),
        s(&b),
        s(&out_dir),
    ]));
    let text = o.all();
    let _ = fs::write(ctx.t.join("vm-scripts.out"), &text);
    if ctx.r.absorb(&text) == 0 {
        ctx.r.fail("vm-scripts: check.py reported nothing", &tail1(&text, 3));
    }
}
