//! Index lookups on a generated index of 100k paths (tiny files, the
//! bench's default reference graph): PathInfoIndex::path_info, referrers,
//! path_from_hash_part, is_valid, valid_subset, and a whole QueryPathInfo
//! answer (lookup + wire encoding). The store and index are made once under
//! cargo's target tmpdir and reused.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;

use snix_lower_store::server::ops::LowerStore;
use snix_lower_store_bench::gen::{self, Rng};
use snix_lower_store_index::PathInfoIndex;
use snix_lower_store_protocol::request::QueryPathInfo;
use snix_lower_store_protocol::wire::WireBuf;
use snix_lower_store_protocol::ProtoVersion;
use snix_lower_store_types::lower::LowerDir;
use snix_lower_store_types::{StoreDir, StorePath};

const N: usize = 100_000;

fn setup() -> (PathBuf, PathBuf, Vec<StorePath>) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("index-bench");
    gen::indexed_tiny_store(&dir, N).expect("generating and indexing the store")
}

fn index(c: &mut Criterion) {
    let (lower, state, paths) = setup();
    let idx = PathInfoIndex::open(&state, "/nix/store").unwrap();
    let mut rng = Rng(1);
    let mut pick = move || rng.below(N);

    let mut g = c.benchmark_group(format!("index ({N} paths)"));
    g.bench_function("path_info", |b| {
        b.iter(|| idx.path_info(black_box(&paths[pick()])).unwrap().unwrap())
    });
    g.bench_function("is_valid", |b| {
        b.iter(|| idx.is_valid(black_box(&paths[pick()])).unwrap())
    });
    g.bench_function("referrers", |b| {
        b.iter(|| idx.referrers(black_box(&paths[pick()])).unwrap())
    });
    g.bench_function("path_from_hash_part", |b| {
        b.iter(|| {
            idx.path_from_hash_part(black_box(paths[pick()].hash_part()))
                .unwrap()
                .unwrap()
        })
    });
    let batch: Vec<StorePath> = (0..32).map(|_| paths[pick()].clone()).collect();
    g.throughput(Throughput::Elements(32));
    g.bench_function("valid_subset of 32", |b| {
        b.iter(|| idx.valid_subset(black_box(&batch)).unwrap())
    });
    g.finish();

    let store = LowerStore {
        backend: snix_lower_store::backend::index(PathInfoIndex::open(&state, "/nix/store").unwrap()),
        lower: LowerDir::open(&lower).unwrap(),
        store_dir: StoreDir::new("/nix/store").unwrap(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let reqs: Vec<QueryPathInfo> = paths
        .iter()
        .take(4096)
        .map(|p| QueryPathInfo {
            path: format!("/nix/store/{}", p.base_name()),
        })
        .collect();
    let mut i = 0;
    let mut g = c.benchmark_group(format!("answer ({N} paths)"));
    g.bench_function("QueryPathInfo (lookup + encoding)", |b| {
        b.iter(|| {
            i = (i + 1) % reqs.len();
            let mut out = WireBuf::new(ProtoVersion(38));
            rt.block_on(store.answer(black_box(&reqs[i]), &mut out))
                .expect("answered");
            out
        })
    });
    g.finish();
}

criterion_group!(benches, index);
criterion_main!(benches);
