//! Running commands on the host: every command's output is captured, and
//! every error names the command that failed together with its exit status
//! and the tail of its stderr, so a FAIL line can be acted upon without
//! re-running anything.
//!
//! Invariant: a command's stdin is closed unless the caller sets it, so no
//! command waits on the terminal.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Captured result of one finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub desc: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// stdout then stderr, as `2>&1` gives them (not interleaved).
    pub fn combined(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// Fails unless the command exited with status 0.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(anyhow!("{}", self.failure_text("failed")))
        }
    }

    /// Fails unless the command exited with a non-zero status.
    pub fn failed(self) -> Result<Output> {
        if self.success() {
            bail!(
                "`{}` succeeded but was expected to fail; stdout: {}",
                self.desc,
                tail(&self.stdout(), 400)
            )
        }
        Ok(self)
    }

    pub fn failure_text(&self, what: &str) -> String {
        let status = match self.code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".to_string(),
        };
        format!(
            "`{}` {what} ({status}): {}",
            self.desc,
            tail(&self.stderr(), 600).trim()
        )
    }
}

/// The last `n` bytes of `s` (on a char boundary), for error messages.
pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion with stdin closed, capturing stdout and stderr.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{desc}`"))?;
    Ok(Output {
        desc,
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// Runs a program on the host and requires success.
pub fn host<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    capture(Command::new(program).args(args))?.ok()
}

/// Single-quotes `s` for /bin/sh.
pub fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Polls `ok` every `every` until it returns true or `limit` has passed;
/// returns whether it did.
pub fn wait_for(limit: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(every);
    }
}
