//! PASS/FAIL/SKIP lines, one per check, each naming its case.
//!
//! Invariant: a missing prerequisite is a FAIL under CI=true, a SKIP
//! otherwise; the exit status follows the number of FAILs alone.

pub(crate) struct Report {
    ci: bool,
    fails: usize,
    passes: usize,
}

impl Report {
    pub(crate) fn new(ci: bool) -> Report {
        Report {
            ci,
            fails: 0,
            passes: 0,
        }
    }

    /// `PASS name (detail)`; the detail is left out when empty.
    pub(crate) fn pass(&mut self, name: &str, detail: &str) {
        self.passes += 1;
        if detail.is_empty() {
            println!("PASS {name}");
        } else {
            println!("PASS {name} ({detail})");
        }
    }

    /// `FAIL name: why`.
    pub(crate) fn fail(&mut self, name: &str, why: &str) {
        self.fails += 1;
        if why.is_empty() {
            println!("FAIL {name}");
        } else {
            println!("FAIL {name}: {why}");
        }
    }

    /// PASS when `ok`, else FAIL with `why` (computed only then).
    pub(crate) fn check(&mut self, ok: bool, name: &str, detail: &str, why: impl FnOnce() -> String) {
        if ok {
            self.pass(name, detail);
        } else {
            self.fail(name, &why());
        }
    }

    /// A prerequisite is absent.
    pub(crate) fn missing(&mut self, name: &str, why: &str) {
        if self.ci {
            self.fail(name, &format!("{why} (CI=true: missing prerequisites fail)"));
        } else {
            println!("SKIP {name}: {why}");
        }
    }

    pub(crate) fn fails(&self) -> usize {
        self.fails
    }
}
