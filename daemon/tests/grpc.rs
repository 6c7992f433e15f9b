//! The gRPC backend: our PathInfoService server in front of an index, our
//! client backend reading it (unix socket and TCP loopback), answers equal
//! to the index backend's (NARs byte for byte, and hashing to their
//! narHash), and the failure behaviour. Our server's `Get` over the paths
//! of the snix capture (`daemon/tests/data/snix/*`) answers the deriver
//! snix's nix-daemon printed for each (`snix-nix-daemon-derivers.txt`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Fixture;
use snix_lower_store::backend::Backend;
use snix_lower_store::grpc::client::GrpcBackend;
use snix_lower_store::grpc::convert::DeriverName;
use snix_lower_store::server::ops::LowerStore;
use snix_lower_store::server::Server;
use snix_lower_store_protocol::request::{QueryPathFromHashPart, QueryReferrers, QueryValidDerivers};
use snix_lower_store_protocol::wire::Limits;
use snix_lower_store_testkit::client::{Client, ClientError};
use snix_lower_store_types::lower::LowerDir;

/// Run our gRPC server on its own runtime, so dropping the guard really
/// stops it (listener and open HTTP/2 connections alike).
struct GrpcServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcServer {
    fn start(server: Arc<Server>, addr: String) -> GrpcServer {
        GrpcServer::start_with(server, addr, DeriverName::default())
    }

    fn start_with(server: Arc<Server>, addr: String, deriver_name: DeriverName) -> GrpcServer {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                tokio::select! {
                    r = snix_lower_store::server::grpc::serve_with(server, &addr, deriver_name) => r.unwrap(),
                    _ = rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        GrpcServer {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
    }
}

async fn wait_for(path: &std::path::Path) {
    for _ in 0..200 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

async fn serve_backend(f: &Fixture, backend: Arc<dyn Backend>, socket: &std::path::Path) {
    let store = LowerStore {
        backend,
        lower: LowerDir::open(&f.lower).unwrap(),
        store_dir: f.sd.clone(),
    };
    let server = Arc::new(Server {
        store,
        trusted_users: vec![],
        limits: Limits::default(),
        conn_limits: Default::default(),
        daemon_version: "t".into(),
        stats: Default::default(),
    });
    let l = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(server.run(vec![l], None, std::future::pending()));
}

async fn answers(c: &mut Client, f: &Fixture) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..f.entries.len() {
        let p = f.full(i);
        let mut info = c.query_path_info(&p).await.unwrap().unwrap();
        info.registration_time = 0;
        out.push(format!("{info:?}"));
        out.push(format!(
            "{:?}",
            c.call(&QueryReferrers { path: p.clone() }).await.unwrap()
        ));
        out.push(format!(
            "{:?}",
            c.call(&QueryValidDerivers { path: p.clone() }).await.unwrap()
        ));
        let nar = c.nar_from_path(&p, info.nar_size).await.unwrap();
        let mut sink = snix_lower_store_types::nar::HashingSink::default();
        std::io::Write::write_all(&mut sink, &nar).unwrap();
        assert_eq!(
            sink.finish().0.to_base16(),
            info.nar_hash,
            "NAR of {p} against its narHash"
        );
        out.push(format!("NAR {nar:?}"));
        let q = QueryPathFromHashPart {
            hash_part: f.entries[i].path.hash_part().into(),
        };
        out.push(c.call(&q).await.unwrap().unwrap_or_default());
    }
    let missing = format!("/nix/store/{}-missing", "a".repeat(32));
    out.push(format!("{:?}", c.query_path_info(&missing).await.unwrap()));
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_backend_answers_like_the_index_over_unix_and_tcp() {
    let f = Fixture::new();
    f.import_all();
    let index_server = f.serve().await;
    let grpc_sock = f.dir.path().join("grpc.sock");
    let _g = GrpcServer::start(index_server.clone(), format!("unix://{}", grpc_sock.display()));
    wait_for(&grpc_sock).await;

    let lower = LowerDir::open(&f.lower).unwrap();
    let b = GrpcBackend::connect(
        &format!("grpc+unix://{}", grpc_sock.display()),
        lower.clone(),
        f.sd.clone(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(b.snapshot_len(), f.entries.len() as u64);
    let via_grpc = f.dir.path().join("via-grpc.sock");
    serve_backend(&f, snix_lower_store::backend::grpc(b), &via_grpc).await;

    let mut direct = Client::connect(&f.socket, 38).await.unwrap();
    let mut grpc = Client::connect(&via_grpc, 38).await.unwrap();
    let a = answers(&mut direct, &f).await;
    assert_eq!(a, answers(&mut grpc, &f).await);
    // The fixture has referrers and a deriver, so the comparison covered them.
    assert!(a.iter().any(|s| s.contains("demo-top.drv")));

    // TCP loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _t = GrpcServer::start(index_server, format!("127.0.0.1:{port}"));
    let mut b = None;
    for _ in 0..100 {
        match GrpcBackend::connect(
            &format!("grpc+http://127.0.0.1:{port}"),
            lower.clone(),
            f.sd.clone(),
            Duration::from_secs(2),
        )
        .await
        {
            Ok(x) => {
                b = Some(x);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let b = b.expect("TCP gRPC server never answered");
    let top = &f.entries.iter().find(|e| e.deriver.is_some()).unwrap().path;
    assert_eq!(
        b.path_info(top).await.unwrap().unwrap().deriver,
        f.entries.iter().find(|e| e.deriver.is_some()).unwrap().deriver
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_at_start_and_lost_at_runtime_are_errors_naming_the_backend() {
    let f = Fixture::new();
    f.import_all();
    let lower = LowerDir::open(&f.lower).unwrap();
    let nowhere = format!("grpc+unix://{}/nothing.sock", f.dir.path().display());
    let e = GrpcBackend::connect(&nowhere, lower.clone(), f.sd.clone(), Duration::from_secs(1))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nothing.sock"), "{e}");

    let index_server = f.serve().await;
    let grpc_sock = f.dir.path().join("grpc.sock");
    let g = GrpcServer::start(index_server, format!("unix://{}", grpc_sock.display()));
    wait_for(&grpc_sock).await;
    let b = GrpcBackend::connect(
        &format!("grpc+unix://{}", grpc_sock.display()),
        lower,
        f.sd.clone(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let via_grpc = f.dir.path().join("via-grpc.sock");
    serve_backend(&f, snix_lower_store::backend::grpc(b), &via_grpc).await;
    let mut c = Client::connect(&via_grpc, 38).await.unwrap();
    assert!(c.is_valid_path(&f.full(0)).await.unwrap());
    drop(g);
    let _ = std::fs::remove_file(&grpc_sock);
    match c.is_valid_path(&f.full(0)).await {
        Err(ClientError::Daemon(m)) => assert!(m.contains("snix PathInfoService") && m.contains("grpc.sock"), "{m}"),
        other => panic!("a lost backend must be an error, got {other:?}"),
    }
    // The connection to our daemon survives the backend's absence.
    assert!(c.query_path_info(&f.full(1)).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn put_is_refused_and_health_is_serving() {
    use snix_lower_store::grpc::proto::store::path_info_service_client::PathInfoServiceClient;
    let f = Fixture::new();
    f.import_all();
    let index_server = f.serve().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _g = GrpcServer::start(index_server, format!("127.0.0.1:{port}"));
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = PathInfoServiceClient::connect(url.clone()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.unwrap();
    let e = client
        .put(snix_lower_store::grpc::proto::store::PathInfo::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "snix.store.v1.PathInfoService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

/// The deriver's name on the wire in each `--grpc-deriver-name` form (with
/// ".drv" by default, as snix's nix-daemon needs it), and our client reading
/// either back as exactly the deriver the index holds.
#[tokio::test(flavor = "multi_thread")]
async fn deriver_name_on_the_wire_and_read_back_exactly() {
    use snix_lower_store::grpc::proto::store::path_info_service_client::PathInfoServiceClient;
    use snix_lower_store::grpc::proto::store::{get_path_info_request, GetPathInfoRequest};
    let f = Fixture::new();
    f.import_all();
    let index_server = f.serve().await;
    let lower = LowerDir::open(&f.lower).unwrap();
    let e = f.entries.iter().find(|e| e.deriver.is_some()).unwrap();
    let want = e.deriver.clone().unwrap();
    assert!(want.name().ends_with(".drv"));
    let digest = snix_lower_store_types::hash::nix32_decode::<20>(e.path.hash_part())
        .unwrap()
        .to_vec();
    for (form, wire_name) in [
        (DeriverName::WithDrv, want.name().to_owned()),
        (
            DeriverName::WithoutDrv,
            want.name().strip_suffix(".drv").unwrap().to_owned(),
        ),
    ] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _g = GrpcServer::start_with(index_server.clone(), format!("127.0.0.1:{port}"), form);
        let url = format!("http://127.0.0.1:{port}");
        let mut raw = None;
        for _ in 0..100 {
            if let Ok(c) = PathInfoServiceClient::connect(url.clone()).await {
                raw = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = raw
            .expect("TCP gRPC server never answered")
            .get(GetPathInfoRequest {
                by_what: Some(get_path_info_request::ByWhat::ByOutputHash(digest.clone())),
            })
            .await
            .unwrap()
            .into_inner();
        let d = got.narinfo.unwrap().deriver.unwrap();
        assert_eq!((form, d.name.as_str()), (form, wire_name.as_str()));
        let b = GrpcBackend::connect(
            &format!("grpc+http://127.0.0.1:{port}"),
            lower.clone(),
            f.sd.clone(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(b.path_info(&e.path).await.unwrap().unwrap().deriver, Some(want.clone()));
        let b = snix_lower_store::backend::grpc(b);
        assert_eq!(b.valid_derivers(&e.path).await.unwrap(), vec![want.clone()]);
    }
}

/// A PathInfoService holding no `ca` (as snix-store's `copy` leaves it):
/// through our gRPC client, text, source and flat sha256 paths get exactly
/// the `ca` real Nix recorded, from the store path's own proof; the others
/// none; with proving off, none at all. Asked twice, the answer is the same
/// (the second from the cache).
#[tokio::test(flavor = "multi_thread")]
async fn grpc_backend_proves_content_addresses_the_service_lacks() {
    use snix_lower_store_index::import::{self, ImportOptions};
    use snix_lower_store_types::ca_proof::CaProofOptions;
    let f = Fixture::new();
    let (doc, reg) = common::nix_made_lower(&f.lower);
    let batch = import::parse_registration(&reg, &f.sd, "reg").unwrap();
    let lower = LowerDir::open(&f.lower).unwrap();
    let off = ImportOptions {
        ca_proof: CaProofOptions::OFF,
        ..Default::default()
    };
    import::import(&f.state, &f.sd, &lower, batch, off).unwrap();
    let index_server = f.serve().await;
    let grpc_sock = f.dir.path().join("grpc.sock");
    let _g = GrpcServer::start(index_server, format!("unix://{}", grpc_sock.display()));
    wait_for(&grpc_sock).await;
    let addr = format!("grpc+unix://{}", grpc_sock.display());
    let deadline = Duration::from_secs(5);
    let proving = GrpcBackend::connect(&addr, lower.clone(), f.sd.clone(), deadline)
        .await
        .unwrap();
    let plain = GrpcBackend::connect_with(&addr, lower.clone(), f.sd.clone(), deadline, CaProofOptions::OFF)
        .await
        .unwrap();
    let mut proven = 0;
    for e in doc["entries"].as_array().unwrap() {
        let p = f.sd.parse(e["path"].as_str().unwrap()).unwrap();
        let want = (e["kind"] != "unprovable").then(|| e["nix_ca"].as_str().unwrap().to_owned());
        for round in 0..2 {
            let got = proving.path_info(&p).await.unwrap().unwrap().ca.map(|c| c.render());
            assert_eq!(got, want, "{p} (round {round})");
        }
        assert_eq!(plain.path_info(&p).await.unwrap().unwrap().ca, None, "{p}");
        proven += usize::from(want.is_some());
    }
    assert_eq!(proven, 7);
}

/// Each captured `nix-store -q --deriver` line of snix's nix-daemon:
/// (path, deriver path or `None` for "unknown-deriver").
fn captured_derivers(dir: &std::path::Path) -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(dir.join("snix-nix-daemon-derivers.txt")).unwrap();
    let v: Vec<(String, Option<String>)> = text
        .lines()
        .filter_map(|l| l.split_once(" --deriver: "))
        .map(|(p, d)| {
            let d = d.trim();
            (p.to_owned(), (d != "unknown-deriver").then(|| d.to_owned()))
        })
        .collect();
    assert!(
        v.len() >= 8 && v.iter().any(|(_, d)| d.is_some()),
        "{}: {v:?}",
        dir.display()
    );
    v
}

/// An index of the capture's `nix-daemon-path-info.json` (Nix's own path
/// infos), its small files in the lower dir and an empty directory for
/// each other path (their contents are not read).
fn index_capture(f: &Fixture, dir: &std::path::Path) {
    use snix_lower_store_index::import::{self, ImportOptions};
    let lower = f.dir.path().join("capture-lower");
    std::fs::create_dir_all(&lower).unwrap();
    let json = std::fs::read_to_string(dir.join("nix-daemon-path-info.json")).unwrap();
    let batch = import::parse_path_info_json(&json, &f.sd, "nix-daemon-path-info.json").unwrap();
    for e in &batch {
        let small = dir.join("files").join(e.path.base_name());
        let at = lower.join(e.path.base_name());
        if small.exists() {
            std::fs::copy(&small, &at).unwrap();
        } else {
            std::fs::create_dir_all(&at).unwrap();
        }
    }
    let state = f.dir.path().join("capture-state");
    std::fs::create_dir_all(&state).unwrap();
    let l = LowerDir::open(&lower).unwrap();
    import::import(&state, &f.sd, &l, batch, ImportOptions::default()).unwrap();
    std::fs::remove_dir_all(&f.state).unwrap();
    std::fs::rename(&state, &f.state).unwrap();
    std::fs::remove_dir_all(&f.lower).unwrap();
    std::fs::rename(&lower, &f.lower).unwrap();
}

/// What snix's nix-daemon printed for `nix-store -q --deriver` of each path
/// of the capture (it builds the path from the deriver's digest and name in
/// the `Get` answer) is what our `--grpc-listen` server's `Get` answers, for
/// the index of the same paths as Nix's daemon reported them.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_get_answers_the_derivers_snix_nix_daemon_printed() {
    use snix_lower_store::grpc::proto::store::path_info_service_client::PathInfoServiceClient;
    use snix_lower_store::grpc::proto::store::{get_path_info_request, GetPathInfoRequest};
    use snix_lower_store_types::hash::{nix32_decode, nix32_encode};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snix");
    let mut dirs: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.retain(|d| d.join("snix-nix-daemon-derivers.txt").exists());
    dirs.sort();
    assert!(dirs.len() >= 2, "captures for Nix 2.26 and 2.34: {dirs:?}");
    let mut checked = 0;
    for dir in dirs {
        let f = Fixture::new();
        index_capture(&f, &dir);
        let server = f.serve().await;
        let sock = f.dir.path().join("grpc.sock");
        let _g = GrpcServer::start(server, format!("unix://{}", sock.display()));
        wait_for(&sock).await;
        let channel = tonic::transport::Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let sock = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(sock).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut client = PathInfoServiceClient::new(channel);
        for (path, want) in captured_derivers(&dir) {
            let base = path.strip_prefix("/nix/store/").unwrap();
            let digest = nix32_decode::<20>(&base[..32]).unwrap().to_vec();
            let got = client
                .get(GetPathInfoRequest {
                    by_what: Some(get_path_info_request::ByWhat::ByOutputHash(digest)),
                })
                .await
                .unwrap_or_else(|e| panic!("{}: Get {path}: {e}", dir.display()))
                .into_inner();
            let deriver = got.narinfo.and_then(|n| n.deriver);
            let printed = deriver.map(|d| format!("/nix/store/{}-{}", nix32_encode(&d.digest), d.name));
            assert_eq!(printed, want, "{}: deriver of {path}", dir.display());
            checked += 1;
        }
    }
    assert!(checked >= 16, "{checked} paths checked");
}
