//! Re-executing the current program in private namespaces, so every mount it
//! makes (and, with a PID namespace, every process it starts) disappears with
//! it, even on a crash.
//!
//! Invariant: the re-executed program sees `marker` in its environment and
//! never re-executes again; arguments are passed through unchanged.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Which namespaces [`enter_private`] unshares besides the mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// Keep the host's PID namespace.
    Shared,
    /// A new PID namespace with its own /proc (`unshare --pid --fork --mount-proc`).
    Private,
}

/// Whether the current process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Returns when already inside (`marker` is set); otherwise re-executes the
/// current program with the same arguments under `unshare --mount
/// --propagation private` (plus a PID namespace for [`Pid::Private`]) and
/// never returns. `program` names the caller in the messages; a caller that
/// is not root, or an `unshare` that cannot start, ends the process with
/// exit status 2.
pub fn enter_private(program: &str, marker: &str, pid: Pid, why_root: &str) {
    if std::env::var_os(marker).is_some() {
        return;
    }
    if !is_root() {
        eprintln!("{program} must run as root ({why_root})");
        std::process::exit(2);
    }
    let me = match std::env::current_exe() {
        Ok(me) => me,
        Err(e) => {
            eprintln!("{program}: cannot find its own executable: {e}");
            std::process::exit(2);
        }
    };
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private"]);
    if pid == Pid::Private {
        cmd.args(["--pid", "--fork", "--mount-proc"]);
    }
    let err = cmd
        .arg("--")
        .arg(me)
        .args(std::env::args_os().skip(1))
        .env(marker, "1")
        .exec();
    eprintln!("{program}: cannot re-execute under unshare: {err}");
    std::process::exit(2);
}
