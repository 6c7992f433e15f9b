//! What moving a SQLite point lookup off tokio's async threads costs: one
//! `PathInfoIndex::path_info` (the lookup behind QueryPathInfo) run inline on
//! the async thread, through `spawn_blocking`, and through the daemon's own `blocking::run`
//! (`block_in_place` on this runtime); on a
//! multi-thread runtime with 2 workers and 1 or 4 concurrent tasks.
//!
//! Not a criterion bench: what matters is CPU per op (all threads of the
//! process, from getrusage), which criterion does not measure; wall time per
//! op is printed next to it. The index (20k generated paths) is made once
//! under cargo's target tmpdir and reused. Run with
//! `cargo bench -p bench --bench blocking`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use snix_lower_store_bench::gen::{self, Rng};
use snix_lower_store_bench::procfs::self_cpu_seconds;
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_types::StorePath;

const N: usize = 20_000;
const OPS_PER_TASK: usize = 20_000;

fn setup() -> (PathBuf, Vec<StorePath>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blocking-bench");
    let (_, state, paths) = gen::indexed_tiny_store(&dir, N).expect("generating and indexing the store");
    (state, paths)
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Inline,
    SpawnBlocking,
    BlockingRun,
}

async fn lookup(mode: Mode, idx: &Arc<PathInfoIndex>, p: &StorePath) -> bool {
    match mode {
        Mode::Inline => idx.path_info(p).unwrap().is_some(),
        Mode::SpawnBlocking => {
            // The alternative blocking::run does not take on this runtime.
            let (idx, p) = (idx.clone(), p.clone());
            tokio::task::spawn_blocking(move || idx.path_info(&p).unwrap().is_some())
                .await
                .unwrap()
        }
        Mode::BlockingRun => {
            // The daemon's own path: blocking::run (block_in_place here).
            let (idx, p) = (idx.clone(), p.clone());
            snix_lower_store::blocking::run(move || idx.path_info(&p).unwrap().is_some()).await
        }
    }
}

/// CPU µs and wall µs per op for `tasks` concurrent tasks.
fn measure(mode: Mode, tasks: usize, idx: &Arc<PathInfoIndex>, paths: &Arc<Vec<StorePath>>) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = |ops: usize| {
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let (idx, paths) = (idx.clone(), paths.clone());
                handles.push(tokio::spawn(async move {
                    let mut rng = Rng(t as u64 + 1);
                    for _ in 0..ops {
                        let p = &paths[rng.below(paths.len())];
                        assert!(lookup(mode, &idx, p).await);
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        })
    };
    run(OPS_PER_TASK / 10); // warm up the page cache, the readers and the blocking pool
    let (cpu0, t0) = (self_cpu_seconds(), Instant::now());
    run(OPS_PER_TASK);
    let (cpu, wall) = (self_cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    let ops = (tasks * OPS_PER_TASK) as f64;
    (cpu / ops * 1e6, wall / ops * 1e6)
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (state, paths) = setup();
    let idx = Arc::new(PathInfoIndex::open(&state, "/nix/store").unwrap());
    let paths = Arc::new(paths);
    println!("path_info on {N} paths, 2 worker threads, {OPS_PER_TASK} ops per task");
    println!("{:<16} {:>6} {:>12} {:>12}", "mode", "tasks", "CPU µs/op", "wall µs/op");
    for tasks in [1, 4] {
        for mode in [Mode::Inline, Mode::SpawnBlocking, Mode::BlockingRun] {
            let (cpu, wall) = measure(mode, tasks, &idx, &paths);
            println!("{:<16} {tasks:>6} {cpu:>12.2} {wall:>12.2}", format!("{mode:?}"));
        }
    }
}
