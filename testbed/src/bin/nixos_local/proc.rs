//! Running the tools the harness drives (nix-instantiate, systemd-analyze,
//! nsenter, ...) and the small text helpers its failure details use.
//!
//! Invariants: stdin is always /dev/null unless a pipe is asked for; a tool
//! that cannot be started is reported as a failed run (exit code -1 and the
//! reason on stderr), never a panic.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a finished command said.
pub(crate) struct Out {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// stdout and stderr together (the shell's `2>&1`), trailing newlines
    /// dropped as `$(...)` does.
    pub(crate) fn all(&self) -> String {
        let mut s = self.stdout.clone();
        s.push_str(&self.stderr);
        s.trim_end_matches('\n').to_string()
    }

    /// stdout with trailing newlines dropped.
    pub(crate) fn out(&self) -> String {
        self.stdout.trim_end_matches('\n').to_string()
    }
}

/// A command from a program and its arguments.
pub(crate) fn cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(&args[0]);
    c.args(&args[1..]);
    c
}

/// `args` under `timeout SECS`.
pub(crate) fn timeout<S: AsRef<std::ffi::OsStr>>(secs: u32, args: &[S]) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).args(args);
    c
}

/// The words of `base` followed by `rest` (a command line without quoting).
pub(crate) fn argv<'a>(base: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    base.split_whitespace().chain(rest.iter().copied()).collect()
}

/// Runs `c` to its end, capturing stdout and stderr.
pub(crate) fn run(c: &mut Command) -> Out {
    match c.stdin(Stdio::null()).output() {
        Ok(o) => Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Out {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run {c:?}: {e}"),
        },
    }
}

/// Runs `c` with stdout and stderr both appended to `log`; true on success.
pub(crate) fn run_logged(c: &mut Command, log: &Path) -> bool {
    let file = match fs::File::create(log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nixos-local: cannot create {}: {e}", log.display());
            return false;
        }
    };
    let err = file.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    c.stdin(Stdio::null()).stdout(file).stderr(err);
    c.status().map(|s| s.success()).unwrap_or(false)
}

/// `producer | consumer`; the consumer's output is returned.
pub(crate) fn pipe(producer: &mut Command, consumer: &mut Command) -> Out {
    let child = producer
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Out {
                ok: false,
                stdout: String::new(),
                stderr: format!("cannot run {producer:?}: {e}"),
            }
        }
    };
    let stdin = child.stdout.take().map(Stdio::from).unwrap_or_else(Stdio::null);
    let out = match consumer.stdin(stdin).output() {
        Ok(o) => Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Out {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run {consumer:?}: {e}"),
        },
    };
    let produced = child.wait().map(|s| s.success()).unwrap_or(false);
    Out {
        ok: out.ok && produced,
        ..out
    }
}

/// The last `n` lines of `s`.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim_end_matches('\n').lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The first `n` lines of `s`.
pub(crate) fn head(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// Lines joined by spaces (the shell's `tr '\n' ' '`).
pub(crate) fn oneline(s: &str) -> String {
    s.lines().map(|l| format!("{l} ")).collect()
}

/// The last `n` lines of `s` on one line.
pub(crate) fn tail1(s: &str, n: usize) -> String {
    oneline(&tail(s, n))
}

/// The last whitespace-separated word of `s` (awk's `$NF`).
pub(crate) fn last_word(s: &str) -> String {
    s.split_whitespace().last().unwrap_or("").to_string()
}

/// Every character but A-Za-z0-9 as `_` (the shell's `tr -c 'A-Za-z0-9\n' '_'`).
pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The shell's `[[ $text == pattern ]]` for patterns with `*` only.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `p` is an executable file.
pub(crate) fn is_exec(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `command -v NAME`: the first executable NAME on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').map(|d| Path::new(d).join(name)).find(|p| is_exec(p))
}

/// The names in directory `d` (not starting with '.'), sorted: the shell's `d/*`.
pub(crate) fn glob_dir(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.'));
    v.sort();
    v
}

/// `rm -rf p` then `mkdir -p p`.
pub(crate) fn fresh_dir(p: &Path) {
    let _ = fs::remove_dir_all(p);
    let _ = fs::create_dir_all(p);
}

/// `cp -a SRC/. DST/` (and other tree copies) through cp itself, so modes,
/// links and hard links are what cp makes of them; false on an error.
pub(crate) fn cp(args: &[&str]) -> bool {
    run(Command::new("cp").args(args)).ok
}

/// A path as &str for argument lists (the harness's paths are UTF-8).
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_bash() {
        assert!(glob("660 *alt* active", "660 /x/alt/socket active"));
        assert!(!glob("660 *alt* active", "660 /x/socket active"));
        assert!(glob("*narHash*", "{\"narHash\": 1}"));
        assert!(!glob("*lowerdir=/a*", "upperdir=/b"));
        assert!(glob("exact", "exact"));
        assert!(!glob("660 *alt* active", "660 /alt/socket failed"));
        assert!(!glob("660 *", "661 x"));
    }

    #[test]
    fn tail_and_oneline() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(oneline("a\nb"), "a b ");
        assert_eq!(sanitize("case a-b"), "case_a_b");
    }
}
