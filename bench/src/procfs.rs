//! CPU time and peak memory of a daemon, from /proc.
//!
//! Unsafe: getrusage(2), which has no safe wrapper in std or rustix.

#![allow(unsafe_code)]

use std::fs;

/// utime + stime + cutime + cstime of `pid`, in seconds. The `c` fields
/// count reaped children: Nix's daemon forks a worker per connection and
/// reaps it when the connection closes.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14.
    let tick = rustix::param::clock_ticks_per_second() as f64;
    let sum: u64 = f[11..15].iter().filter_map(|v| v.parse::<u64>().ok()).sum();
    Some(sum as f64 / tick)
}

/// This process's own user+system CPU seconds (threads included).
pub fn self_cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain C data for which all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// A `Vm…:` field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Direct children of `pid` (needs CONFIG_PROC_CHILDREN).
pub fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}
