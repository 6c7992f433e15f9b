//! PASS/FAIL/SKIP lines, one per check, and the summary at the end: the one
//! report both local harnesses (NixOS and systemd) print.
//!
//! Invariants: every line names its case ("<case>: <check>"); a failure is
//! recorded as "<part>/<case>: <check>" so the summary says which part, which
//! case and which check failed; with CI=true a missing prerequisite is a
//! failure, never a skip; the exit status follows the failures alone.

use std::time::Duration;

pub struct Report {
    ci: bool,
    ci_note: &'static str,
    part: String,
    passed: usize,
    skipped: usize,
    failed: Vec<String>,
    parts: Vec<(String, usize, usize, Duration)>,
}

impl Report {
    pub fn new(ci: bool) -> Self {
        Report {
            ci,
            ci_note: "CI=true: nothing may be skipped",
            part: "prerequisites".into(),
            passed: 0,
            skipped: 0,
            failed: vec![],
            parts: vec![],
        }
    }

    /// The note a missing prerequisite's FAIL line ends with under CI=true.
    pub fn with_ci_note(mut self, note: &'static str) -> Self {
        self.ci_note = note;
        self
    }

    /// How many checks failed so far.
    pub fn fails(&self) -> usize {
        self.failed.len()
    }

    /// Starts counting for part `name`.
    pub fn begin(&mut self, name: &str) {
        self.part = name.to_string();
    }

    /// Ends the current part, which took `took`.
    pub fn end(&mut self, took: Duration, passed_before: usize, failed_before: usize) {
        let (p, f) = (self.passed - passed_before, self.failed.len() - failed_before);
        self.parts.push((self.part.clone(), p, f, took));
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.passed, self.failed.len())
    }

    pub fn pass(&mut self, name: &str, detail: &str) {
        if detail.is_empty() {
            println!("PASS {name}");
        } else {
            println!("PASS {name} ({detail})");
        }
        self.passed += 1;
    }

    pub fn fail(&mut self, name: &str, detail: &str) {
        if detail.is_empty() {
            println!("FAIL {name}");
        } else {
            println!("FAIL {name}: {detail}");
        }
        self.failed.push(format!("{}/{}", self.part, name));
    }

    /// One check: PASS with `pass_detail` when `ok`, else FAIL with `fail_detail`.
    pub fn check(&mut self, ok: bool, name: &str, pass_detail: &str, fail_detail: &str) -> bool {
        if ok {
            self.pass(name, pass_detail);
        } else {
            self.fail(name, fail_detail);
        }
        ok
    }

    /// PASS with `detail` when `ok`, else FAIL with `why` (computed only then).
    pub fn check_lazy(&mut self, ok: bool, name: &str, detail: &str, why: impl FnOnce() -> String) {
        if ok {
            self.pass(name, detail);
        } else {
            self.fail(name, &why());
        }
    }

    /// A missing prerequisite: SKIP, or FAIL under CI=true.
    pub fn skip_or_fail(&mut self, name: &str, why: &str) {
        if self.ci {
            self.fail(name, &format!("{why} ({})", self.ci_note));
        } else {
            println!("SKIP {name}: {why}");
            self.skipped += 1;
        }
    }

    pub fn info(&self, line: &str) {
        println!("     {line}");
    }

    /// Prints the output of a checker that writes PASS/FAIL lines itself
    /// (eval.nix's JSON, check.py, switch.py selftest, rotate-checks.py) and
    /// counts its lines; returns how many PASS or FAIL lines it had.
    pub fn absorb(&mut self, text: &str) -> usize {
        let mut n = 0;
        for line in text.lines() {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("FAIL ") {
                // The check's name and its detail are both separated by
                // ": " here: the line is kept whole, shortened.
                let name: String = rest.chars().take(200).collect();
                self.failed.push(format!("{}/{}", self.part, name));
                n += 1;
            } else if line.starts_with("PASS ") {
                self.passed += 1;
                n += 1;
            }
        }
        n
    }

    /// The summary: checks per part with durations, the failures by name;
    /// returns the exit code (1 on a failure).
    /// `title` starts each summary line ("nixos-local").
    pub fn summary(&self, title: &str) -> i32 {
        println!("==> {title} durations");
        for (part, p, f, took) in &self.parts {
            println!("  {part:<8} {:4}s  {p} passed, {f} failed", took.as_secs());
        }
        let skipped = if self.skipped > 0 {
            format!(", {} skipped", self.skipped)
        } else {
            String::new()
        };
        println!(
            "{title}: {} checks passed, {} failed{skipped}",
            self.passed,
            self.failed.len()
        );
        if self.failed.is_empty() {
            println!("{title}: all passed");
            return 0;
        }
        for f in &self.failed {
            println!("  failed: {f}");
        }
        println!("{title}: {} failure(s)", self.failed.len());
        1
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn failures_set_the_exit_code_and_absorbed_lines_count() {
        let mut r = Report::new(true).with_ci_note("note");
        r.begin("p");
        r.check_lazy(true, "a", "", String::new);
        assert_eq!(r.summary("t"), 0);
        assert_eq!(r.absorb("PASS x\nFAIL y: why\nnoise\n"), 2);
        r.skip_or_fail("z", "absent");
        assert_eq!((r.counts(), r.fails()), ((2, 2), 2));
        assert_eq!(r.summary("t"), 1);
    }
}
