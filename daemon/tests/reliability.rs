//! Reliability: limits, slow and hostile clients, faults. Each test names the
//! guarantee it proves (README, "Reliability").

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Fixture, Lookups};
use snix_lower_store_protocol::wire::WireBuf;
use snix_lower_store_testkit::client::{Client, ClientError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A slow client (one byte at a time) ties up only its own task.
async fn slow_client_does_not_block_others(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let mut slow = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    let mut hello = WireBuf::default();
    hello.u64(0x6e697863);
    let bytes = hello.0.clone();
    let slow_task = tokio::spawn(async move {
        for b in bytes {
            slow.write_all(&[b]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    for _ in 0..100 {
        assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    }
    // Served in full while the slow client has sent at most a few bytes.
    assert!(!slow_task.is_finished(), "the slow client should still be dribbling");
    slow_task.abort();
}

/// 1,000 idle connections do not keep others from being served.
async fn a_thousand_idle_connections(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let server = f.serve().await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(Client::connect(&f.socket, 38).await.unwrap());
    }
    assert_eq!(
        server.stats.open_connections.load(std::sync::atomic::Ordering::Relaxed),
        1000
    );
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    for _ in 0..200 {
        assert!(c.query_path_info(&f.full(1)).await.unwrap().is_some());
    }
    // And the idle ones still work.
    assert!(idle[500].is_valid_path(&f.full(0)).await.unwrap());
}

/// Over --max-connections, a client gets a clear error and others keep working.
async fn connection_limit_is_a_clear_error(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve_with(snix_lower_store::server::ConnLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let mut a = Client::connect(&f.socket, 38).await.unwrap();
    let _b = Client::connect(&f.socket, 38).await.unwrap();
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    match c.is_valid_path(&f.full(0)).await {
        Err(ClientError::Daemon(m)) => assert!(m.contains("limit of 2 connections"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(a.is_valid_path(&f.full(0)).await.unwrap());
}

/// --idle-timeout closes a silent connection; --handshake-timeout a silent
/// opener. On tokio's paused clock: timers never fire early, and "soon
/// after" is bounded by a deadline that only a hang reaches.
async fn idle_and_handshake_timeouts_close_connections(lookups: Lookups) {
    use tokio::time::Instant;
    const TIMEOUT: Duration = Duration::from_millis(200);
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let server = f
        .serve_with(snix_lower_store::server::ConnLimits {
            idle_timeout: Some(TIMEOUT),
            handshake_timeout: TIMEOUT,
            ..Default::default()
        })
        .await;
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    let served = Instant::now();
    let mut silent = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(POLL_DEADLINE, c.r.get_mut().read(&mut buf))
        .await
        .expect("idle connection was not closed within the deadline")
        .unwrap();
    assert_eq!(n, 0, "idle connection should be closed, not sent anything");
    assert!(
        served.elapsed() >= TIMEOUT,
        "idle connection closed before --idle-timeout"
    );
    let n = tokio::time::timeout(POLL_DEADLINE, silent.read(&mut buf))
        .await
        .expect("silent opener was not closed within the deadline")
        .unwrap();
    assert_eq!(n, 0, "silent opener should be closed");
    assert!(
        opened.elapsed() >= TIMEOUT,
        "silent opener closed before --handshake-timeout"
    );
    assert!(c.is_valid_path(&f.full(0)).await.is_err(), "closed connection answered");
    let t0 = Instant::now();
    while server.stats.open_connections.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(
            t0.elapsed() < POLL_DEADLINE,
            "closed connections are still counted as open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long to wait for something that should happen "soon": far beyond
/// any scheduling delay on a loaded machine, and only spent on failure.
const POLL_DEADLINE: Duration = Duration::from_secs(30);

/// A client that never reads its replies blocks only itself.
async fn client_that_never_reads_blocks_only_itself(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let mut greedy = Client::connect(&f.socket, 38).await.unwrap();
    // Ask for many NARs and never read them: our writes fill the socket buffer.
    let mut req = WireBuf::default();
    for _ in 0..2000 {
        req.u64(38).str(&f.full(5));
    }
    greedy.w.write_all(&req.0).await.unwrap();
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    for _ in 0..50 {
        assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    }
}

/// Trailing garbage after a request is read as the next op: an unknown op
/// closes that connection only.
async fn trailing_garbage_closes_only_that_connection(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let mut bad = Client::connect(&f.socket, 38).await.unwrap();
    let mut req = WireBuf::default();
    req.u64(1).str(&f.full(0));
    req.0.extend_from_slice(b"garbage!garbage!");
    bad.w.write_all(&req.0).await.unwrap();
    bad.stderr().await.unwrap();
    assert!(bad.r.bool("valid").await.unwrap());
    assert!(matches!(bad.stderr().await, Err(ClientError::Daemon(m)) if m.contains("unknown worker op")));
    let mut good = Client::connect(&f.socket, 38).await.unwrap();
    assert!(good.is_valid_path(&f.full(0)).await.unwrap());
}

/// A NAR of several chunks arrives whole and framed as Nix frames it (the
/// chunk buffers start small and grow).
async fn multi_chunk_nar_arrives_whole(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    let size = 3 * 256 * 1024 + 5;
    let (p, nar_size) = index_with_big_object(&f, size);
    let _server = f.serve().await;
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let got = c.nar_from_path(&f.sd.display(&p), nar_size).await.unwrap();
    // NAR strings are framed as the worker protocol's.
    let mut want = WireBuf::default();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"regular",
        b"contents",
        &vec![7u8; size],
        b")",
    ] {
        want.bytes(t);
    }
    let want = want.0;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "NAR of {size} bytes differs from its layout");
    // Still in step afterwards.
    assert!(c.is_valid_path(&f.sd.display(&p)).await.unwrap());
}

/// A client hanging up mid-NAR ends that task; nothing leaks.
async fn disconnect_mid_nar_ends_the_task(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    // One large object so the NAR is still streaming when we hang up.
    let (p, _) = index_with_big_object(&f, 64 << 20);
    let server = f.serve().await;
    for _ in 0..5 {
        let mut c = Client::connect(&f.socket, 38).await.unwrap();
        let mut a = WireBuf::default();
        a.u64(38).str(&f.sd.display(&p));
        c.w.write_all(&a.0).await.unwrap();
        c.stderr().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        c.r.get_mut().read_exact(&mut buf).await.unwrap();
        drop(c);
    }
    let t0 = Instant::now();
    while server.stats.open_connections.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "connection tasks did not end after the clients hung up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats.in_flight.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// The lower dir vanishing at run time is an error naming the problem, never
/// a "valid" answer.
async fn vanished_lower_dir_is_an_error_not_an_answer(lookups: Lookups) {
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    f.serve().await;
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    let moved = f.dir.path().join("moved-away");
    std::fs::rename(&f.lower, &moved).unwrap();
    // A successful liveness check is trusted for 100 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    match c.is_valid_path(&f.full(0)).await {
        Err(ClientError::Daemon(m)) => assert!(m.contains("lower dir") && m.contains("gone"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // Another file system mounted in its place (here: a different dir on
    // another device is not available in a test, so put the same one back).
    std::fs::rename(&moved, &f.lower).unwrap();
    assert!(c.is_valid_path(&f.full(0)).await.unwrap());
}

/// kill -9 at random points of an incremental import (12,000 paths added
/// to an index already holding 12,000), many times: the index afterwards
/// opens and equals, table by table (schema included), exactly the state
/// before the import or exactly the state after it. The inputs carry their
/// registration times, so "after" is one fixed state. Kill points are spread
/// over the duration of the same import measured first, so they land
/// mid-import however fast the machine is; where each landed is printed
/// (time, share of the import, bytes the importer had written, WAL size,
/// resulting state), and kills must have landed in the second half of the
/// import with the index still in its "before" state.
#[test]
fn repeated_kills_during_import() {
    use snix_lower_store_index::PathInfoIndex;
    let bin = env!("CARGO_BIN_EXE_snix-lower-store");
    let f = Fixture::new();
    let lower = f.dir.path().join("big");
    let entries = snix_lower_store_testkit::demo::generate(&lower, &f.sd, 4000, 6).unwrap();
    // The first 2,000 layers (closed under references), then everything.
    let (base_json, full_json) = (f.dir.path().join("base.json"), f.dir.path().join("full.json"));
    std::fs::write(&base_json, path_info_json(&f.sd, &entries[..12_000])).unwrap();
    std::fs::write(&full_json, path_info_json(&f.sd, &entries)).unwrap();
    let import = |src: &std::path::Path, state: &std::path::Path| spawn_import(bin, src, &lower, state);
    let base = f.dir.path().join("base");
    assert!(import(&base_json, &base).wait().unwrap().success());
    let before_digest = index_digest(&base);
    let probe = f.dir.path().join("probe");
    copy_dir(&base, &probe);
    let t0 = Instant::now();
    assert!(import(&full_json, &probe).wait().unwrap().success());
    let full = t0.elapsed();
    let after_digest = index_digest(&probe);
    assert_ne!(before_digest, after_digest);
    assert_eq!(
        PathInfoIndex::open(&probe, "/nix/store").unwrap().count().unwrap(),
        entries.len() as u64
    );

    let state = f.dir.path().join("state-killed");
    copy_dir(&base, &state);
    let (mut before, mut after, mut late_before) = (0, 0, 0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..25 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let share = (seed % 1000) as f64 / 1000.0 * 0.95;
        let delay = full.mul_f64(share);
        let mut child = import(&full_json, &state);
        std::thread::sleep(delay);
        // What the importer had written (write syscalls) and the WAL's size
        // at the kill: where it landed.
        let wchar = std::fs::read_to_string(format!("/proc/{}/io", child.id()))
            .ok()
            .and_then(|io| io.lines().find_map(|l| l.strip_prefix("wchar: ")?.parse::<u64>().ok()));
        let wal = std::fs::metadata(state.join("index.sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let index = PathInfoIndex::open(&state, "/nix/store")
            .unwrap_or_else(|e| panic!("round {round}: the index no longer opens after a kill at {delay:?}: {e}"));
        let count = index
            .count()
            .unwrap_or_else(|e| panic!("round {round}: count after a kill at {delay:?}: {e}"));
        drop(index);
        let d = index_digest(&state);
        let landed = if d == before_digest {
            "before"
        } else if d == after_digest {
            "after"
        } else {
            panic!("round {round}: after a kill at {delay:?} the index ({count} paths) is neither the state before nor after the import")
        };
        eprintln!(
            "round {round:2}: kill at {delay:>10.3?} ({:4.1}% of {full:.3?}), importer {status}, had written {wchar:?} bytes, WAL {wal} bytes -> {landed} ({count} paths)",
            share * 100.0
        );
        if landed == "before" {
            before += 1;
            late_before += usize::from(share >= 0.5);
        } else {
            after += 1;
            copy_dir(&base, &state);
        }
    }
    assert!(
        before >= 5 && late_before >= 2,
        "only {before} of 25 kills landed before the commit ({late_before} in the import's second half; {after} after); full import {full:?}"
    );
}

/// `nix path-info --json` (Nix 2.26's form) of `es`, with registration times.
fn path_info_json(sd: &snix_lower_store_types::StoreDir, es: &[snix_lower_store_types::path_info::PathInfo]) -> String {
    let m: serde_json::Map<String, serde_json::Value> = es
        .iter()
        .map(|e| {
            let v = serde_json::json!({
                "narHash": e.nar_hash.to_nix32_prefixed(), "narSize": e.nar_size,
                "references": e.references.iter().map(|r| sd.display(r)).collect::<Vec<_>>(),
                "deriver": e.deriver.as_ref().map(|d| sd.display(d)),
                "registrationTime": 1_700_000_000u64, "signatures": [], "ultimate": false,
            });
            (sd.display(&e.path), v)
        })
        .collect();
    serde_json::Value::Object(m).to_string()
}

/// `snix-lower-store import --path-info-json src` into `state`, started.
fn spawn_import(
    bin: &str,
    src: &std::path::Path,
    lower: &std::path::Path,
    state: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new(bin)
        .arg("import")
        .arg("--path-info-json")
        .arg(src)
        .arg("--lower-dir")
        .arg(lower)
        .arg("--state-dir")
        .arg(state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Every table's rows in a fixed order, and the schema, hashed.
fn index_digest(state: &std::path::Path) -> String {
    use sha2::Digest as _;
    let file = state.join("index.sqlite");
    assert!(file.exists(), "no index at {}", file.display());
    let c = rusqlite::Connection::open(file).unwrap();
    let mut h = sha2::Sha256::new();
    let mut st = c
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let schema: Vec<(String, String, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (ty, name, sql) in &schema {
        h.update(format!("{ty} {name} {sql}\n"));
        if ty != "table" {
            continue;
        }
        let q = c.prepare(&format!("SELECT * FROM \"{name}\"")).unwrap();
        let n = q.column_count();
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let mut q = c
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY {}", order.join(", ")))
            .unwrap();
        let mut rows = q.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                h.update(format!("{:?}\u{1f}", r.get::<_, rusqlite::types::Value>(i).unwrap()));
            }
            h.update(b"\n");
        }
    }
    format!("{:x}", h.finalize())
}

/// Copies the files of `from` into a fresh `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Idle exit counts from the last connection's end: an open connection
/// keeps the daemon up however long it lasts, a new connection right after
/// restarts the count, and the exit comes no sooner than the idle time after
/// the last one closed. On tokio's paused clock: only orderings and lower
/// bounds are asserted (timers never fire early), and no time passes
/// between the two connections.
async fn idle_exit_counts_from_the_last_connection(lookups: Lookups) {
    use snix_lower_store::server::Stop;
    use tokio::time::Instant;
    const IDLE: Duration = Duration::from_secs(2);
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let server = f.serve().await; // binds f.socket; use a second socket for the idle-exiting loop
    let sock = f.dir.path().join("idle.sock");
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    let run = tokio::spawn(server.clone().run(vec![l], Some(IDLE), std::future::pending()));
    // A connection held open for longer than IDLE.
    let mut held = Client::connect(&sock, 38).await.unwrap();
    assert!(held.is_valid_path(&f.full(0)).await.unwrap());
    tokio::time::sleep(IDLE + IDLE / 4).await;
    assert!(!run.is_finished(), "exited while a connection was open");
    assert!(held.is_valid_path(&f.full(0)).await.unwrap());
    drop(held);
    // A short connection right after: the count restarts from its end.
    let mut short = Client::connect(&sock, 38).await.unwrap();
    assert!(short.is_valid_path(&f.full(0)).await.unwrap());
    drop(short);
    let last_closed = Instant::now();
    let stop = tokio::time::timeout(IDLE + POLL_DEADLINE, run)
        .await
        .expect("no idle exit")
        .unwrap()
        .unwrap();
    assert_eq!(stop, Stop::Idle);
    assert!(
        last_closed.elapsed() >= IDLE,
        "exited {:?} after the last connection closed, before the idle time {IDLE:?}",
        last_closed.elapsed()
    );
}

/// Clients over --max-connections are told why by at most REFUSING_AT_ONCE
/// tasks at a time; the ones beyond are closed at once, without a task each,
/// and once the refused clients are gone the next one is told again. On the
/// paused clock, so the refusals' own timeouts (5 s) cannot end them mid-test.
async fn refusals_over_the_limit_stay_bounded(lookups: Lookups) {
    use snix_lower_store::server::REFUSING_AT_ONCE;
    use snix_lower_store_protocol::{WORKER_MAGIC_1, WORKER_MAGIC_2};
    let f = Fixture::with_lookups(lookups);
    f.import_all();
    let server = f
        .serve_with(snix_lower_store::server::ConnLimits {
            max_connections: 1,
            ..Default::default()
        })
        .await;
    let mut held = Client::connect(&f.socket, 38).await.unwrap();
    assert!(held.is_valid_path(&f.full(0)).await.unwrap());
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let mut hello = WireBuf::default();
    hello.u64(WORKER_MAGIC_1);
    let mut refused = Vec::new();
    for _ in 0..REFUSING_AT_ONCE * 3 {
        let mut s = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
        // Fails (broken pipe) if the daemon closed this one already.
        let _ = s.write_all(&hello.0).await;
        refused.push(s);
    }
    // Accepted in order: the first REFUSING_AT_ONCE are answered (the
    // handshake starts), all later ones are closed without a byte.
    for (i, s) in refused.iter_mut().enumerate() {
        let mut word = [0u8; 8];
        let told = match tokio::time::timeout(POLL_DEADLINE, s.read_exact(&mut word)).await {
            Ok(Ok(_)) => {
                assert_eq!(u64::from_le_bytes(word), WORKER_MAGIC_2, "client {i}");
                true
            }
            Ok(Err(e)) => {
                let closed = [std::io::ErrorKind::UnexpectedEof, std::io::ErrorKind::ConnectionReset];
                assert!(closed.contains(&e.kind()), "client {i}: {e}");
                false
            }
            Err(_) => panic!("client {i} was neither answered nor closed"),
        };
        assert_eq!(told, i < REFUSING_AT_ONCE, "client {i} of {}", refused.len());
    }
    assert_eq!(server.stats.refusing(), REFUSING_AT_ONCE);
    assert_eq!(
        metrics.num_alive_tasks() - tasks_before,
        REFUSING_AT_ONCE,
        "one task per refused client being told, none for the others"
    );
    // The refused clients hang up: their tasks end and free their slots.
    drop(refused);
    while server.stats.refusing() > 0 {
        tokio::task::yield_now().await;
    }
    let mut late = Client::connect(&f.socket, 38).await.unwrap();
    match late.is_valid_path(&f.full(0)).await {
        Err(ClientError::Daemon(m)) => assert!(m.contains("limit of 1 connections"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(held.is_valid_path(&f.full(0)).await.unwrap());
}

/// Drain waits for a request in flight (here a NAR the client does not read
/// yet): false at its bound while the request is unfinished, true once the
/// reply is written. Real clock (the NAR writer blocks a blocking-pool
/// thread, which stops a paused clock); only lower bounds are asserted.
async fn drain_waits_for_a_request_in_flight(lookups: Lookups) {
    const BOUND: Duration = Duration::from_millis(100);
    let f = Fixture::with_lookups(lookups);
    // Larger than the socket buffers, so the reply cannot be written until read.
    let (p, nar_size) = index_with_big_object(&f, 16 << 20);
    let server = f.serve().await;
    assert!(server.drain(Duration::ZERO).await, "nothing in flight yet");
    let mut c = Client::connect(&f.socket, 38).await.unwrap();
    let mut a = WireBuf::default();
    a.u64(38).str(&f.sd.display(&p));
    c.w.write_all(&a.0).await.unwrap();
    c.stderr().await.unwrap();
    let t0 = Instant::now();
    assert!(!server.drain(BOUND).await, "drain returned true with a NAR unsent");
    assert!(t0.elapsed() >= BOUND, "drain gave up before its bound");
    let waiting = tokio::spawn({
        let server = server.clone();
        async move { server.drain(POLL_DEADLINE).await }
    });
    let mut nar = vec![0u8; nar_size as usize];
    c.r.get_mut().read_exact(&mut nar).await.unwrap();
    assert!(waiting.await.unwrap(), "drain did not see the request finish");
    assert_eq!(server.stats.in_flight.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Indexes the fixture plus one object of `size` bytes (a NAR that is still
/// streaming when a test acts) and returns its path and NAR size.
fn index_with_big_object(f: &Fixture, size: usize) -> (snix_lower_store_types::StorePath, u64) {
    let big = f.lower.join("big-tmp");
    std::fs::write(&big, vec![7u8; size]).unwrap();
    let (h, n) = snix_lower_store_types::nar::nar_hash(&big).unwrap();
    let p = snix_lower_store_testkit::demo::text_path(&f.sd, "big", b"big", &[]);
    std::fs::rename(&big, f.lower.join(p.base_name())).unwrap();
    let mut entries = f.entries.clone();
    entries.push(snix_lower_store_types::path_info::PathInfo::new(p.clone(), h, n));
    let lower = snix_lower_store_types::lower::LowerDir::open(&f.lower).unwrap();
    snix_lower_store_index::import::import(&f.state, &f.sd, &lower, entries, Default::default()).unwrap();
    (p, n)
}

in_both_lookup_modes! {
    #[tokio::test(flavor = "multi_thread")]
    slow_client_does_not_block_others,
    a_thousand_idle_connections,
    connection_limit_is_a_clear_error,
    client_that_never_reads_blocks_only_itself,
    trailing_garbage_closes_only_that_connection,
    multi_chunk_nar_arrives_whole,
    disconnect_mid_nar_ends_the_task,
    vanished_lower_dir_is_an_error_not_an_answer,
    drain_waits_for_a_request_in_flight;
    #[tokio::test(start_paused = true)]
    idle_and_handshake_timeouts_close_connections,
    idle_exit_counts_from_the_last_connection,
    refusals_over_the_limit_stay_bounded;
}
