//! How long-running work (an import, an index build, a verification) says
//! how far it is: a [`Progress`] handle that the work calls with the phase it
//! is in and how many entries of it are done, of a total when known.
//!
//! Where the progress goes is not decided here: a [`Sink`] given by the
//! caller (the binary's terminal bar, plain lines and `STATUS=`), or nowhere
//! ([`Progress::default`], one branch per call).
//!
//! Invariant: reporting never fails or stops the work.

use std::sync::Arc;

/// Where progress goes.
pub trait Sink: Send + Sync {
    /// Ends the running phase and starts `name` with `total` entries when known.
    fn phase(&self, name: &str, total: Option<u64>);
    /// `n` more entries of the running phase are done.
    fn inc(&self, n: u64);
    /// Ends the running phase; `summary`, when given, is the last word.
    fn finish(&self, summary: Option<&str>);
}

/// A cheap, cloneable handle on one command's progress; the default goes
/// nowhere.
#[derive(Clone, Default)]
pub struct Progress {
    sink: Option<Arc<dyn Sink>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sink.is_some() {
            "Progress"
        } else {
            "Progress(silent)"
        })
    }
}

impl Progress {
    /// A handle reporting to `sink`.
    pub fn to(sink: Arc<dyn Sink>) -> Progress {
        Progress { sink: Some(sink) }
    }

    /// Ends the running phase and starts `name` with `total` entries when known.
    pub fn phase(&self, name: &str, total: Option<u64>) {
        if let Some(s) = &self.sink {
            s.phase(name, total);
        }
    }

    /// `n` more entries of the running phase are done.
    pub fn inc(&self, n: u64) {
        if let Some(s) = &self.sink {
            s.inc(n);
        }
    }

    /// Ends the running phase; `summary`, when given, is the last word.
    pub fn finish(&self, summary: Option<&str>) {
        if let Some(s) = &self.sink {
            s.finish(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Sink for Log {
        fn phase(&self, name: &str, total: Option<u64>) {
            self.0.lock().unwrap().push(format!("phase {name} {total:?}"));
        }
        fn inc(&self, n: u64) {
            self.0.lock().unwrap().push(format!("inc {n}"));
        }
        fn finish(&self, summary: Option<&str>) {
            self.0.lock().unwrap().push(format!("finish {summary:?}"));
        }
    }

    #[test]
    fn a_handle_passes_every_call_to_its_sink_and_the_default_to_none() {
        let log = Arc::new(Log::default());
        let p = Progress::to(log.clone());
        p.clone().phase("writing", Some(2));
        p.inc(2);
        p.finish(Some("done"));
        Progress::default().phase("nowhere", None);
        assert_eq!(
            *log.0.lock().unwrap(),
            ["phase writing Some(2)", "inc 2", "finish Some(\"done\")"]
        );
        assert_eq!(
            format!("{:?} {:?}", p, Progress::default()),
            "Progress Progress(silent)"
        );
    }
}
