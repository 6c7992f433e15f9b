//! Codec micro-benchmarks: the wire encoding and decoding of a QueryPathInfo
//! reply and the decoding of its request, all with the daemon's own codec
//! types (nothing here writes a layout), NAR hash parsing, nix32, store path
//! parsing and `.drv` output parsing.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use snix_lower_store_index::PathInfo;
use snix_lower_store_protocol::codec::wire_path_info;
use snix_lower_store_protocol::codec::{StderrFrame, UnkeyedValidPathInfo, Wire};
use snix_lower_store_protocol::request::QueryPathInfo;
use snix_lower_store_protocol::wire::{Limits, WireBuf, WireReader};
use snix_lower_store_protocol::ProtoVersion;
use snix_lower_store_types::drv::parse_outputs;
use snix_lower_store_types::hash::{nix32_decode, nix32_encode};
use snix_lower_store_types::{NarHash, StoreDir, StorePath};

const SD: &str = "/nix/store";
const V: ProtoVersion = ProtoVersion::LATEST;

fn sample_paths(n: usize) -> Vec<StorePath> {
    (0..n)
        .map(|i| {
            let h: [u8; 20] = std::array::from_fn(|k| (i * 31 + k * 7) as u8);
            StorePath::from_base_name(&format!("{}-bench-dependency-{i}", nix32_encode(&h))).unwrap()
        })
        .collect()
}

/// The reply as the daemon sends it, with the daemon's own encoders: the
/// index entry shown as Nix's UnkeyedValidPathInfo, STDERR_LAST, the
/// validity flag and the info (protocol >= 1.16).
fn encode_reply(sd: &StoreDir, b: &mut WireBuf, info: PathInfo) {
    StderrFrame::Last.encode(b);
    Some(wire_path_info(sd, info)).encode(b);
}

fn codecs(c: &mut Criterion) {
    let sd = StoreDir::new(SD).unwrap();
    let refs = sample_paths(10);
    let deriver = StorePath::from_base_name(&format!("{}-bench.drv", nix32_encode(&[9u8; 20]))).unwrap();
    let sig =
        "cache.example.org-1:6wzr1QlOPHG+knFuJIaw+85Z5ivwbdI512JikexG+nQ7JDSZM2hw8zzlcLOguXwrn6ZbbYXTtowR1Cs76Sy3Cg==";
    let info = PathInfo {
        references: refs.clone(),
        deriver: Some(deriver),
        registration_time: 1_700_000_000,
        sigs: vec![snix_lower_store_types::path_info::Signature::parse(sig).unwrap()],
        ..PathInfo::new(refs[0].clone(), NarHash([0xab; 32]), 123_456)
    };
    wire(c, &sd, &refs, &info);
    hash(c, info.nar_hash);
    store(c, &sd, &refs);
}

/// The "wire" group: the QueryPathInfo reply encoded and decoded, and the
/// request decoded.
fn wire(c: &mut Criterion, sd: &StoreDir, refs: &[StorePath], info: &PathInfo) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("wire");
    g.bench_function("encode QueryPathInfo reply (10 refs)", |b| {
        // The daemon owns the info it got from the backend: cloning it is setup.
        b.iter_batched(
            || info.clone(),
            |info| {
                let mut buf = WireBuf::new(V);
                encode_reply(sd, &mut buf, black_box(info));
                buf
            },
            BatchSize::SmallInput,
        )
    });
    let mut reply = WireBuf::new(V);
    encode_reply(sd, &mut reply, info.clone());
    let bytes = reply.0.clone();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("decode QueryPathInfo reply (10 refs)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r = WireReader::new(black_box(&bytes[..]), Limits::default()).with_version(V);
                let last = StderrFrame::decode(&mut r).await.unwrap();
                let info = Option::<UnkeyedValidPathInfo>::decode(&mut r).await.unwrap();
                (last, info)
            })
        })
    });
    let mut req = WireBuf::new(V);
    QueryPathInfo {
        path: sd.display(&refs[3]),
    }
    .encode(&mut req);
    let req = req.0;
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode QueryPathInfo request", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut r = WireReader::new(black_box(&req[..]), Limits::default()).with_version(V);
                QueryPathInfo::decode(&mut r).await.unwrap()
            })
        })
    });
    g.finish();
}

/// The "hash" group: NAR hash parsing and rendering, nix32.
fn hash(c: &mut Criterion, hash: NarHash) {
    let mut g = c.benchmark_group("hash");
    let nix32 = hash.to_nix32_prefixed();
    let b16 = format!("sha256:{}", hash.to_base16());
    let sri = hash.to_sri();
    g.bench_function("NarHash::parse sha256:nix32", |b| {
        b.iter(|| NarHash::parse(black_box(&nix32)).unwrap())
    });
    g.bench_function("NarHash::parse sha256:base16", |b| {
        b.iter(|| NarHash::parse(black_box(&b16)).unwrap())
    });
    g.bench_function("NarHash::parse SRI", |b| {
        b.iter(|| NarHash::parse(black_box(&sri)).unwrap())
    });
    g.bench_function("NarHash::to_base16", |b| b.iter(|| black_box(&hash).to_base16()));
    g.bench_function("nix32_encode 32 bytes", |b| b.iter(|| nix32_encode(black_box(&hash.0))));
    let enc = nix32_encode(&hash.0);
    g.bench_function("nix32_decode 32 bytes", |b| {
        b.iter(|| nix32_decode::<32>(black_box(&enc)).unwrap())
    });
    let enc20 = nix32_encode(&[0x5a; 20]);
    g.bench_function("nix32_decode 20 bytes (hash part)", |b| {
        b.iter(|| nix32_decode::<20>(black_box(&enc20)).unwrap())
    });
    g.finish();
}

/// The "store" group: store path parsing and `.drv` output parsing.
fn store(c: &mut Criterion, sd: &StoreDir, refs: &[StorePath]) {
    let mut g = c.benchmark_group("store");
    let full = sd.display(&refs[5]);
    g.bench_function("StoreDir::parse", |b| b.iter(|| sd.parse(black_box(&full)).unwrap()));
    let drv = sample_drv(sd, refs);
    // parse_outputs stops after the outputs: no bytes/s figure, the rest is not read.
    g.bench_function(
        format!("drv::parse_outputs ({} byte .drv, 3 outputs)", drv.len()),
        |b| b.iter(|| parse_outputs(black_box(drv.as_bytes())).unwrap()),
    );
    g.finish();
}

/// A derivation shaped like nixpkgs' (outputs, input drvs, sources, a long env).
fn sample_drv(sd: &StoreDir, refs: &[StorePath]) -> String {
    let mut drv = String::from("Derive([");
    for (i, o) in ["bin", "dev", "out"].iter().enumerate() {
        if i > 0 {
            drv.push(',');
        }
        drv.push_str(&format!("(\"{o}\",\"{}\",\"\",\"\")", sd.display(&refs[i])));
    }
    drv.push_str("],[");
    for (i, r) in refs.iter().enumerate() {
        if i > 0 {
            drv.push(',');
        }
        drv.push_str(&format!("(\"{}.drv\",[\"out\"])", sd.display(r)));
    }
    drv.push_str("],[\"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-default-builder.sh\"],\"x86_64-linux\",\"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-bash-5.2/bin/bash\",[\"-e\",\"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-default-builder.sh\"],[");
    for i in 0..40 {
        if i > 0 {
            drv.push(',');
        }
        drv.push_str(&format!(
            "(\"var{i}\",\"value with \\\"escapes\\\" and\\nnewlines {}\")",
            "x".repeat(60)
        ));
    }
    drv.push_str("])");
    drv
}

criterion_group!(benches, codecs);
criterion_main!(benches);
