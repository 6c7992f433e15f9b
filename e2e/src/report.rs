//! Scenario outcomes: one `PASS`/`FAIL`/`SKIP`/`N/A` line per scenario as it
//! finishes, and a summary at the end.
//!
//! `N/A` is not a skip: it marks a scenario that cannot exist for one Nix
//! version (Nix 2.8 has no local-overlay store), decided from the version
//! before anything runs, never from a failure. It does not fail a run, even
//! with `CI=true`, and the summary lists, per Nix version that has any, what
//! ran and what was not applicable with the reason.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
    /// Cannot exist for this Nix version (the reason names what it lacks).
    NotApplicable,
}

pub struct Entry {
    pub name: String,
    pub verdict: Verdict,
    pub reason: String,
    pub took: Duration,
}

#[derive(Default)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// Only scenarios whose name contains one of these run (all if empty).
    pub filters: Vec<String>,
}

impl Report {
    pub fn wanted(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Runs one scenario and records its outcome. `name` is the full report
    /// name, e.g. `parity/nix-path-info [nix-2.26]`.
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> bool {
        if !self.wanted(name) {
            return true;
        }
        let start = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let took = start.elapsed();
        let (verdict, reason) = match res {
            Ok(Ok(())) => (Verdict::Pass, String::new()),
            Ok(Err(e)) => (Verdict::Fail, format!("{e:#}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                (Verdict::Fail, format!("panicked: {msg}"))
            }
        };
        self.record(name, verdict, &reason, took);
        verdict == Verdict::Pass
    }

    /// Prints a note under a scenario's line (what was normalised, left out).
    pub fn note(&mut self, name: &str, text: &str) {
        if self.wanted(name) {
            println!("  note {name}: {}", one_line(text));
        }
    }

    pub fn fail(&mut self, name: &str, reason: &str) {
        if self.wanted(name) {
            self.record(name, Verdict::Fail, reason, Duration::ZERO);
        }
    }

    /// Records a scenario that does not apply to one Nix version (if wanted).
    pub fn not_applicable(&mut self, name: &str, reason: &str) {
        if self.wanted(name) {
            self.record(name, Verdict::NotApplicable, reason, Duration::ZERO);
        }
    }

    /// Records a problem with the environment whatever the filters say.
    pub fn setup_problem(&mut self, name: &str, reason: &str, fail: bool) {
        let v = if fail { Verdict::Fail } else { Verdict::Skip };
        self.record(name, v, reason, Duration::ZERO);
    }

    fn record(&mut self, name: &str, verdict: Verdict, reason: &str, took: Duration) {
        let secs = took.as_secs_f64();
        match verdict {
            Verdict::Pass => println!("PASS {name} ({secs:.1}s)"),
            Verdict::Fail => println!("FAIL {name}: {} ({secs:.1}s)", one_line(reason)),
            Verdict::Skip => println!("SKIP {name}: {}", one_line(reason)),
            Verdict::NotApplicable => println!("N/A  {name}: {}", one_line(reason)),
        }
        self.entries.push(Entry {
            name: name.to_string(),
            verdict,
            reason: reason.to_string(),
            took,
        });
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.entries.iter().filter(|e| e.verdict == v).count()
    }

    pub fn print_summary(&self, total: Duration) {
        println!();
        println!(
            "summary: {} passed, {} failed, {} skipped, {} not applicable, {} total in {:.1}s",
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
            self.count(Verdict::NotApplicable),
            self.entries.len(),
            total.as_secs_f64()
        );
        let mut slow: Vec<&Entry> = self.entries.iter().collect();
        slow.sort_by_key(|e| std::cmp::Reverse(e.took));
        let slowest: Vec<String> = slow
            .iter()
            .take(5)
            .map(|e| format!("{} {:.1}s", e.name, e.took.as_secs_f64()))
            .collect();
        println!("slowest: {}", slowest.join(", "));
        for line in self.applicability() {
            println!("{line}");
        }
        for e in self.entries.iter().filter(|e| e.verdict == Verdict::Fail) {
            println!(
                "  failed: {}: {}",
                e.name,
                one_line(&e.reason).chars().take(300).collect::<String>()
            );
        }
    }
}

impl Report {
    /// For each Nix version (report tag) with a not-applicable scenario:
    /// what ran there (grouped by scenario group, with its verdict when not
    /// a pass) and what did not apply, grouped by reason.
    pub fn applicability(&self) -> Vec<String> {
        let mut labels: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.verdict == Verdict::NotApplicable)
            .filter_map(|e| label_of(&e.name))
            .collect();
        labels.dedup();
        labels.sort();
        labels.dedup();
        let mut out = vec![];
        for label in labels {
            let mine: Vec<&Entry> = self
                .entries
                .iter()
                .filter(|e| label_of(&e.name) == Some(label))
                .collect();
            let ran: Vec<&&Entry> = mine.iter().filter(|e| e.verdict != Verdict::NotApplicable).collect();
            let na = mine.len() - ran.len();
            out.push(format!(
                "applicability [{label}]: {} ran, {na} not applicable",
                ran.len()
            ));
            let mut groups: Vec<(String, Vec<String>)> = vec![];
            for e in &ran {
                let (group, rest) = split_name(&e.name, label);
                let item = match e.verdict {
                    Verdict::Pass => rest,
                    Verdict::Fail => format!("{rest} (FAIL)"),
                    _ => format!("{rest} (SKIP)"),
                };
                push_grouped(&mut groups, group, item);
            }
            for (g, items) in groups {
                out.push(format!("  ran {g}: {}", items.join(", ")));
            }
            let mut reasons: Vec<(String, Vec<String>)> = vec![];
            for e in mine.iter().filter(|e| e.verdict == Verdict::NotApplicable) {
                let name = e.name.trim_end_matches(&format!(" [{label}]")).to_string();
                push_grouped(&mut reasons, one_line(&e.reason), name);
            }
            for (why, names) in reasons {
                out.push(format!("  n/a ({why}): {}", names.join(", ")));
            }
        }
        out
    }
}

/// The Nix tag of a report name (`x/y [nix-2.8]` -> `nix-2.8`).
fn label_of(name: &str) -> Option<&str> {
    name.strip_suffix(']')?.rsplit_once(" [").map(|(_, l)| l)
}

/// `group/rest [label]` -> (`group`, `rest`).
fn split_name(name: &str, label: &str) -> (String, String) {
    let bare = name.trim_end_matches(&format!(" [{label}]"));
    match bare.split_once('/') {
        Some((g, r)) => (g.to_string(), r.to_string()),
        None => (bare.to_string(), String::new()),
    }
}

fn push_grouped(groups: &mut Vec<(String, Vec<String>)>, key: String, item: String) {
    match groups.iter_mut().find(|(k, _)| *k == key) {
        Some((_, v)) => v.push(item),
        None => groups.push((key, vec![item])),
    }
}

/// Reasons stay on their report line; newlines become ` | `.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Report name of a scenario run with one Nix version.
pub fn tagged(name: &str, label: &str) -> String {
    format!("{name} [{label}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, verdict: Verdict, reason: &str) -> Entry {
        Entry {
            name: name.into(),
            verdict,
            reason: reason.into(),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn applicability_lists_what_ran_and_why_the_rest_did_not() {
        let r = Report {
            entries: vec![
                entry("parity/a [nix-2.8]", Verdict::Pass, ""),
                entry("parity/b [nix-2.8]", Verdict::Fail, "broken"),
                entry("parity/c [nix-2.8]", Verdict::NotApplicable, "no c"),
                entry("overlay-ours/d [nix-2.8]", Verdict::NotApplicable, "no overlay"),
                entry("overlay-nix/d [nix-2.8]", Verdict::NotApplicable, "no overlay"),
                entry("parity/a [nix-2.26]", Verdict::Pass, ""),
                entry("readonly/x", Verdict::Pass, ""),
            ],
            filters: vec![],
        };
        assert_eq!(
            r.applicability(),
            [
                "applicability [nix-2.8]: 2 ran, 3 not applicable",
                "  ran parity: a, b (FAIL)",
                "  n/a (no c): parity/c",
                "  n/a (no overlay): overlay-ours/d, overlay-nix/d",
            ]
        );
        assert_eq!(r.count(Verdict::NotApplicable), 3);
        assert_eq!(r.count(Verdict::Fail), 1);
    }
}
