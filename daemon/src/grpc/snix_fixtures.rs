//! Tests against bytes captured from a real snix-store (CI cannot build
//! snix; these fixtures are how CI meets it). `daemon/tests/data/snix/<nix>/`
//! holds the raw protobuf bodies of snix's `Get` answers and `List` messages
//! for a small store made by that Nix, and the path infos Nix's own daemon
//! reports for the same paths (`tests/snix/capture-fixtures` makes them; its
//! NOTE names the snix commit and the Nix version).
//!
//! Invariant checked: every captured message, decoded with our prost types
//! and `convert::from_snix`, then given a `ca` by the gRPC client's proof
//! where snix has none, equals Nix's path info field by field: path,
//! deriver (with ".drv", once), references, NAR hash and size, signatures,
//! `ca`. Not compared: `registrationTime` and `ultimate`, which snix's
//! `PathInfo` has no field for (they read back as 0 and false; the e2e
//! gRPC flavours normalise them the same way). Our prost types re-encode
//! every captured message to the very same bytes (no field of snix's is
//! unknown to our .proto copy), so a replay server built on them sends
//! snix's bytes; through it, the real `GrpcBackend` answers the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use prost::Message;
use serde_json::Value;

use super::convert::from_snix;
use super::proto::store::PathInfo as SnixPathInfo;
use snix_lower_store_types::ca_proof::{self, CaProofOptions, Claim};
use snix_lower_store_types::path_info::PathInfo;
use snix_lower_store_types::StoreDir;

const STORE: &str = "/nix/store";

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snix")
}

/// Every captured Nix version's directory (at least the two the suite runs).
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_root())
        .expect("daemon/tests/data/snix exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("NOTE").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 2,
        "expected fixtures for Nix 2.26 and 2.34, found {dirs:?}"
    );
    dirs
}

/// The `.pb` files of `dir/sub`, sorted by name, with their bytes.
fn messages(dir: &Path, sub: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no messages in {}", dir.join(sub).display());
    v
}

/// Nix's daemon's `nix path-info --json`, by full path.
fn nix_infos(dir: &Path) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(dir.join("nix-daemon-path-info.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(m) => m.into_iter().collect(),
        other => panic!("expected an object keyed by path, got {other}"),
    }
}

/// A message decoded as the gRPC client does: `from_snix`, then the `ca`
/// proof (`ca_proof::prove_path`, what `GrpcBackend` runs for a path info
/// without one) with the captured small files as the lower dir.
fn decode_as_client(dir: &Path, raw: &[u8]) -> (SnixPathInfo, PathInfo) {
    let msg = SnixPathInfo::decode(raw).expect("captured message decodes");
    let mut info = from_snix(msg.clone()).expect("from_snix accepts the captured message");
    if info.ca.is_none() {
        let claim = Claim {
            path: &info.path,
            references: &info.references,
            nar_hash: &info.nar_hash,
            nar_size: info.nar_size,
        };
        let sd = StoreDir::new(STORE).unwrap();
        info.ca = ca_proof::prove_path(&claim, &sd, &dir.join("files"), CaProofOptions::default()).into_ca();
    }
    (msg, info)
}

/// Nix's NAR hash (`sha256-<base64>` or `sha256:<nix32>`) as raw bytes.
fn nar_hash_bytes(s: &str) -> Vec<u8> {
    if let Some(b64) = s.strip_prefix("sha256-") {
        return base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    }
    let nix32 = s.strip_prefix("sha256:").expect("a sha256 NAR hash");
    snix_lower_store_types::hash::nix32_decode_vec(nix32, 32).unwrap()
}

fn full(p: &impl std::fmt::Display) -> String {
    format!("{STORE}/{p}")
}

/// Every field where `ours` differs from Nix's `nix` (empty: equal).
/// `registrationTime` and `ultimate` are left out: snix has neither.
fn mismatches(ours: &PathInfo, nix: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |field: &str, ours: Value, theirs: &Value| {
        if ours != *theirs {
            bad.push(format!("{field}: ours {ours}, Nix {theirs}"));
        }
    };
    check("deriver", ours.deriver.as_ref().map(full).into(), &nix["deriver"]);
    let mut refs: Vec<Value> = nix["references"].as_array().unwrap().clone();
    refs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    let our_refs: Vec<Value> = ours.references.iter().map(|r| full(r).into()).collect();
    check("references", our_refs.into(), &refs.into());
    let nix_hash = nar_hash_bytes(nix["narHash"].as_str().unwrap());
    check("narHash", ours.nar_hash.0.to_vec().into(), &nix_hash.into());
    check("narSize", ours.nar_size.into(), &nix["narSize"]);
    let mut sigs: Vec<Value> = nix["signatures"].as_array().unwrap().clone();
    sigs.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    let our_sigs: Vec<String> = ours.sigs.iter().map(|s| s.to_string()).collect();
    check("signatures", our_sigs.into(), &sigs.into());
    check("ca", ours.ca.as_ref().map(|c| c.render()).into(), &nix["ca"]);
    bad
}

/// Each captured message (Get answers, then List messages) of every
/// fixture, decoded as the client does, with Nix's path info for it.
fn every_message() -> Vec<(String, SnixPathInfo, PathInfo, Value)> {
    let mut out = Vec::new();
    for dir in fixture_dirs() {
        let nix = nix_infos(&dir);
        for sub in ["get", "list"] {
            let msgs = messages(&dir, sub);
            let mut seen: Vec<String> = Vec::new();
            for (file, raw) in msgs {
                let (msg, info) = decode_as_client(&dir, &raw);
                let path = full(&info.path);
                // File names carry the path the capture asked for or listed.
                assert!(file.ends_with(info.path.base_name()), "{file} holds {path}");
                let theirs = nix
                    .get(&path)
                    .unwrap_or_else(|| panic!("Nix reports nothing for {path}"));
                seen.push(path.clone());
                let label = format!("{}/{sub}/{file}", dir.file_name().unwrap().to_string_lossy());
                out.push((label, msg, info, theirs.clone()));
            }
            seen.sort();
            assert_eq!(
                seen,
                nix.keys().cloned().collect::<Vec<_>>(),
                "{sub} of {}",
                dir.display()
            );
        }
    }
    out
}

/// The fixtures' point: snix's real bytes, read by us, say what Nix says.
#[test]
fn captured_messages_equal_nix_path_infos() {
    let all = every_message();
    assert!(all.len() >= 32, "{} messages", all.len());
    for (label, _, info, nix) in &all {
        let bad = mismatches(info, nix);
        assert!(bad.is_empty(), "{label}: {bad:#?}");
    }
}

/// The captured store covers what the issue names: derivation outputs
/// whose deriver snix stores WITH ".drv" (written by `snix-store copy` and
/// by snix's nix-daemon), signatures, `ca`s snix holds (`snix-store
/// import`: NAR_SHA256, type 0 on the wire; snix's nix-daemon: TEXT_SHA256
/// and FLAT_SHA256) and `ca`s snix dropped that the proof restores (the
/// `.drv` files' text, a flat fixed output).
#[test]
fn captured_store_covers_derivers_signatures_and_cas() {
    let all = every_message();
    let stored_deriver_names: Vec<&str> = all
        .iter()
        .filter_map(|(_, m, _, _)| m.narinfo.as_ref()?.deriver.as_ref())
        .map(|d| d.name.as_str())
        .collect();
    assert!(stored_deriver_names.len() >= 3 * 2 * 2, "{stored_deriver_names:?}");
    assert!(stored_deriver_names
        .iter()
        .all(|n| n.ends_with(".drv") && !n.ends_with(".drv.drv")));
    let with_deriver = all.iter().filter(|(_, _, i, _)| i.deriver.is_some()).count();
    assert_eq!(with_deriver, stored_deriver_names.len());
    assert!(all.iter().any(|(_, _, i, _)| i.sigs.len() == 2));
    assert!(all.iter().any(|(_, _, i, _)| i.sigs.len() == 1 && i.deriver.is_some()));
    let snix_has_ca =
        |(_, m, _, _): &&(String, SnixPathInfo, PathInfo, Value)| m.narinfo.as_ref().unwrap().ca.is_some();
    for kind in ["fixed:r:sha256:", "text:sha256:", "fixed:sha256:"] {
        let held = |x: &&(String, SnixPathInfo, PathInfo, Value)| {
            snix_has_ca(x) && x.2.ca.as_ref().is_some_and(|c| c.render().starts_with(kind))
        };
        assert!(all.iter().any(|x| held(&x)), "snix holds no {kind} ca");
        let proven = |x: &&(String, SnixPathInfo, PathInfo, Value)| {
            !snix_has_ca(x) && x.2.ca.as_ref().is_some_and(|c| c.render().starts_with(kind))
        };
        if kind != "fixed:r:sha256:" {
            assert!(all.iter().any(|x| proven(&x)), "no {kind} proven");
        }
    }
}

/// Without the client's proof the paths `snix-store copy` wrote lack their
/// `ca`: the comparison sees it (so the proof is what makes them equal).
#[test]
fn without_the_proof_copied_cas_are_missing() {
    let mut missing = 0;
    for dir in fixture_dirs() {
        let nix = nix_infos(&dir);
        for (_, raw) in messages(&dir, "get") {
            let info = from_snix(SnixPathInfo::decode(raw.as_slice()).unwrap()).unwrap();
            let bad = mismatches(&info, &nix[&full(&info.path)]);
            if nix[&full(&info.path)]["ca"].is_string() && info.ca.is_none() {
                assert_eq!(bad.len(), 1, "{bad:?}");
                assert!(bad[0].starts_with("ca: ours null"), "{bad:?}");
                missing += 1;
            } else {
                assert!(bad.is_empty(), "{bad:?}");
            }
        }
    }
    assert!(missing >= 8, "{missing}");
}

/// Each compared field can fail: one change per field is reported.
#[test]
fn every_compared_field_can_fail() {
    let all = every_message();
    let (_, _, good, nix) = all
        .iter()
        .find(|(_, _, i, _)| i.deriver.is_some() && !i.sigs.is_empty() && !i.references.is_empty())
        .expect("a signed derivation output");
    assert!(mismatches(good, nix).is_empty());
    let doubled =
        snix_lower_store_types::StorePath::from_owned_base_name(format!("{}.drv", good.deriver.as_ref().unwrap()))
            .unwrap();
    type Change = Box<dyn Fn(&mut PathInfo)>;
    let changes: Vec<(&str, Change)> = vec![
        ("deriver", Box::new(move |i| i.deriver = Some(doubled.clone()))),
        ("references", Box::new(|i| drop(i.references.pop()))),
        ("narHash", Box::new(|i| i.nar_hash.0[0] ^= 1)),
        ("narSize", Box::new(|i| i.nar_size += 1)),
        ("signatures", Box::new(|i| i.sigs[0].bytes.push(0))),
        (
            "ca",
            Box::new(|i| {
                let text = format!("text:sha256:{}", snix_lower_store_types::hash::nix32_encode(&[0; 32]));
                i.ca = Some(snix_lower_store_types::content_address::ContentAddress::parse(&text).unwrap())
            }),
        ),
    ];
    for (field, change) in changes {
        let mut bad_info = good.clone();
        change(&mut bad_info);
        let bad = mismatches(&bad_info, nix);
        assert_eq!(bad.len(), 1, "{field}: {bad:?}");
        assert!(bad[0].starts_with(&format!("{field}: ")), "{field}: {bad:?}");
    }
}

/// Our .proto copy knows every field snix sends: decoding and re-encoding
/// gives back the captured bytes exactly.
#[test]
fn our_prost_types_reencode_snix_bytes_exactly() {
    for dir in fixture_dirs() {
        for sub in ["get", "list"] {
            for (file, raw) in messages(&dir, sub) {
                let again = SnixPathInfo::decode(raw.as_slice()).unwrap().encode_to_vec();
                assert_eq!(again, raw, "{}/{sub}/{file}", dir.display());
            }
        }
    }
}

/// A PathInfoService that answers with the captured messages: Get by
/// digest from `get/`, NOT_FOUND with snix's message otherwise, List in the
/// captured order from `list/` (byte-identical to snix's, see above).
struct Replay {
    get: Vec<SnixPathInfo>,
    list: Vec<SnixPathInfo>,
}

type ReplayStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<SnixPathInfo, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl super::proto::store::path_info_service_server::PathInfoService for Replay {
    async fn get(
        &self,
        req: tonic::Request<super::proto::store::GetPathInfoRequest>,
    ) -> Result<tonic::Response<SnixPathInfo>, tonic::Status> {
        use super::proto::store::get_path_info_request::ByWhat;
        let Some(ByWhat::ByOutputHash(digest)) = req.into_inner().by_what else {
            return Err(tonic::Status::invalid_argument("no digest"));
        };
        self.get
            .iter()
            .find(|m| {
                let info = from_snix((*m).clone()).unwrap();
                snix_lower_store_types::hash::nix32_decode_vec(info.path.hash_part(), 20) == Some(digest.clone())
            })
            .map(|m| tonic::Response::new(m.clone()))
            .ok_or_else(|| tonic::Status::not_found("PathInfo not found"))
    }

    async fn put(&self, _: tonic::Request<SnixPathInfo>) -> Result<tonic::Response<SnixPathInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("replay"))
    }

    async fn calculate_nar(
        &self,
        _: tonic::Request<super::proto::castore::Entry>,
    ) -> Result<tonic::Response<super::proto::store::CalculateNarResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("replay"))
    }

    type ListStream = ReplayStream;

    async fn list(
        &self,
        _: tonic::Request<super::proto::store::ListPathInfoRequest>,
    ) -> Result<tonic::Response<ReplayStream>, tonic::Status> {
        let items: Vec<Result<SnixPathInfo, tonic::Status>> = self.list.iter().cloned().map(Ok).collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

/// The real client (`GrpcBackend`, with its deriver settling and `ca`
/// proof, the captured small files as its lower dir) in front of the replay
/// of each fixture answers every path as Nix's daemon does, and an unknown
/// path as not valid.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_backend_over_replayed_snix_answers_like_nix() {
    use super::client::GrpcBackend;
    use super::proto::store::path_info_service_server::PathInfoServiceServer;
    for dir in fixture_dirs() {
        let decode = |sub| {
            messages(&dir, sub)
                .into_iter()
                .map(|(_, raw)| SnixPathInfo::decode(raw.as_slice()).unwrap())
                .collect()
        };
        let replay = Replay {
            get: decode("get"),
            list: decode("list"),
        };
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("snix.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PathInfoServiceServer::new(replay))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let sd = StoreDir::new(STORE).unwrap();
        let lower = snix_lower_store_types::lower::LowerDir::open(&dir.join("files")).unwrap();
        let addr = format!("grpc+unix://{}", sock.display());
        let b = GrpcBackend::connect(&addr, lower, sd.clone(), std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(b.snapshot_len(), messages(&dir, "list").len() as u64);
        for (path, nix) in nix_infos(&dir) {
            let p = sd.parse(&path).unwrap();
            let info = b
                .path_info(&p)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{path} not valid"));
            let bad = mismatches(&info, &nix);
            assert!(bad.is_empty(), "{}: {path}: {bad:#?}", dir.display());
        }
        let unknown = sd.parse("/nix/store/00000000000000000000000000000000-unknown").unwrap();
        assert_eq!(b.path_info(&unknown).await.unwrap(), None);
        server.abort();
    }
}

/// snix's answer for a digest it does not hold is NOT_FOUND, which the
/// client reads as "not valid" (any other status is an error naming the
/// service).
#[test]
fn captured_not_found_status() {
    for dir in fixture_dirs() {
        let text = std::fs::read_to_string(dir.join("get-not-found.txt")).unwrap();
        assert_eq!(text, "code: NotFound\nmessage: PathInfo not found\n");
    }
}
