//! Captures the raw protobuf bytes a snix `PathInfoService` answers, for the
//! fixtures under `daemon/tests/data/snix/` (made by
//! `tests/snix/capture-fixtures`, which runs this against a real
//! `snix-store daemon`).
//!
//! Invariant: every `.pb` file written is exactly the bytes of one gRPC
//! message body as it came off the wire (a pass-through codec: nothing is
//! decoded and re-encoded on the way). Our prost types are used only to
//! encode the requests and to read the root entry's name, which names the
//! files of the List stream.
//!
//! Writes, under OUT_DIR:
//! - `get/<base name>.pb`: the answer to `Get` by the digest of each path given;
//! - `list/<NNN>-<base name>.pb`: each message of the `List` stream, in order;
//! - `get-not-found.txt`: the status code and message of a `Get` of a digest
//!   the service does not hold (all zero bytes).
//!
//! Usage: `snix-capture SOCKET OUT_DIR STORE_PATH...` (built with
//! `cargo build --release -p snix-lower-store --example snix-capture`).
//!
//! `snix-capture add-to-store-nar DAEMON_SOCKET INFO_JSON NAR_FILE` puts one
//! path into a store through a nix-daemon with the worker protocol's
//! AddToStoreNar (the one write snix's nix-daemon implements; Nix's own
//! clients send AddMultipleToStore or ImportPaths instead): every field of
//! Nix's `nix path-info --json` for that path (deriver, references, NAR
//! hash and size, signatures, `ca`), then the NAR, framed.

use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use snix_lower_store::grpc::proto::castore::entry;
use snix_lower_store::grpc::proto::store::{get_path_info_request, GetPathInfoRequest, ListPathInfoRequest, PathInfo};
use snix_lower_store_types::hash::nix32_decode;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

/// Bytes in, bytes out: the request is sent as given, the answer kept as received.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

fn unix_channel(socket: PathBuf) -> Channel {
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://unix.socket").connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(socket).await?,
            ))
        }
    }))
}

/// The base name of the root entry of an encoded PathInfo, for file names.
fn root_name(raw: &[u8]) -> anyhow::Result<String> {
    let p = PathInfo::decode(raw)?;
    let name = match p.entry.and_then(|e| e.entry) {
        Some(entry::Entry::Directory(d)) => d.name,
        Some(entry::Entry::File(f)) => f.name,
        Some(entry::Entry::Symlink(s)) => s.name,
        None => anyhow::bail!("a listed PathInfo has no root entry"),
    };
    Ok(String::from_utf8(name)?)
}

fn get_request(digest: &[u8]) -> Vec<u8> {
    GetPathInfoRequest {
        by_what: Some(get_path_info_request::ByWhat::ByOutputHash(digest.to_vec())),
    }
    .encode_to_vec()
}

async fn get(grpc: &mut tonic::client::Grpc<Channel>, digest: &[u8]) -> Result<Bytes, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("service not ready: {e}")))?;
    let path = PathAndQuery::from_static("/snix.store.v1.PathInfoService/Get");
    Ok(grpc
        .unary(tonic::Request::new(get_request(digest)), path, RawCodec)
        .await?
        .into_inner())
}

async fn capture_gets(grpc: &mut tonic::client::Grpc<Channel>, out: &Path, paths: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.join("get"))?;
    for p in paths {
        let base = p.rsplit('/').next().unwrap_or(p);
        let digest: [u8; 20] = nix32_decode(base.get(..32).unwrap_or(""))
            .ok_or_else(|| anyhow::anyhow!("{p}: not a store path (no nix-base32 hash part)"))?;
        let raw = get(grpc, &digest)
            .await
            .map_err(|s| anyhow::anyhow!("Get {base}: {} {}", s.code(), s.message()))?;
        std::fs::write(out.join("get").join(format!("{base}.pb")), &raw)?;
    }
    let missing = match get(grpc, &[0u8; 20]).await {
        Ok(_) => anyhow::bail!("Get of the all-zero digest succeeded; expected NotFound"),
        Err(s) => format!("code: {:?}\nmessage: {}\n", s.code(), s.message()),
    };
    std::fs::write(out.join("get-not-found.txt"), missing)?;
    Ok(())
}

async fn capture_list(grpc: &mut tonic::client::Grpc<Channel>, out: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out.join("list"))?;
    grpc.ready().await?;
    let path = PathAndQuery::from_static("/snix.store.v1.PathInfoService/List");
    let req = tonic::Request::new(ListPathInfoRequest {}.encode_to_vec());
    let mut stream = grpc.server_streaming(req, path, RawCodec).await?.into_inner();
    let mut n = 0;
    while let Some(raw) = stream.message().await? {
        let name = root_name(&raw)?;
        std::fs::write(out.join("list").join(format!("{n:03}-{name}.pb")), &raw)?;
        n += 1;
    }
    Ok(n)
}

/// The worker protocol's AddToStoreNar op number.
const ADD_TO_STORE_NAR: u64 = 39;

/// AddToStoreNar of the one path in `info_json` (Nix's `nix path-info
/// --json` object, keyed by path) with the NAR in `nar_file`.
async fn add_to_store_nar(socket: &str, info_json: &str, nar_file: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    use snix_lower_store_protocol::wire::WireBuf;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(info_json)?)?;
    let (path, info) = doc
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or_else(|| anyhow::anyhow!("{info_json}: not an object keyed by store path"))?;
    let strs = |k: &str| -> Vec<String> {
        info[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let sri = info["narHash"].as_str().unwrap_or_default();
    let b64 = sri
        .strip_prefix("sha256-")
        .ok_or_else(|| anyhow::anyhow!("{path}: narHash {sri:?} is not sha256-<base64>"))?;
    let nar_hash = snix_lower_store_types::hash::hex_encode(&base64::engine::general_purpose::STANDARD.decode(b64)?);
    let nar = std::fs::read(nar_file)?;
    let mut a = WireBuf::default();
    a.str(path)
        .str(info["deriver"].as_str().unwrap_or(""))
        .str(&nar_hash)
        .strings(strs("references").iter().map(String::as_str))
        .u64(0) // registration time: the daemon's own
        .u64(nar.len() as u64)
        .u64(0) // not ultimate
        .strings(strs("signatures").iter().map(String::as_str))
        .str(info["ca"].as_str().unwrap_or(""))
        .u64(0) // no repair
        .u64(1); // do not check signatures
    for chunk in nar.chunks(1 << 16) {
        a.u64(chunk.len() as u64);
        a.0.extend_from_slice(chunk);
    }
    a.u64(0);
    let mut c = connect_with_options(socket).await?;
    if let Err(e) = c.call_raw(ADD_TO_STORE_NAR, &a).await {
        // snix's nix-daemon (at 50b41ae7e05b) puts the path info, then drops
        // the connection because its NAR reader stops before the framed
        // stream's closing empty frame ("payload was not fully consumed").
        // So the answer is whether the path is there now.
        // It may still be ingesting when our side sees the close: ask a few times.
        let mut stored = None;
        for _ in 0..50 {
            let mut c = connect_with_options(socket).await?;
            stored = c
                .query_path_info(path)
                .await
                .map_err(|q| anyhow::anyhow!("AddToStoreNar {path} through {socket}: {e}; then QueryPathInfo: {q}"))?;
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::ensure!(
            stored.is_some(),
            "AddToStoreNar {path} through {socket}: {e}, and the path is not there"
        );
        println!("added {path} through {socket} (the daemon closed the connection afterwards: {e})");
        return Ok(());
    }
    println!("added {path} through {socket}");
    Ok(())
}

/// A worker-protocol connection (1.37) that has sent SetOptions, which
/// snix's nix-daemon requires before any other op.
async fn connect_with_options(socket: &str) -> anyhow::Result<snix_lower_store_testkit::client::Client> {
    let mut c = snix_lower_store_testkit::client::Client::connect(Path::new(socket), 37).await?;
    let opts = snix_lower_store_protocol::request::SetOptions::default();
    c.call(&opts)
        .await
        .map_err(|e| anyhow::anyhow!("SetOptions through {socket}: {e}"))?;
    Ok(c)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, socket, info, nar] = args.as_slice() {
        if cmd == "add-to-store-nar" {
            return add_to_store_nar(socket, info, nar).await;
        }
    }
    let [socket, out, paths @ ..] = args.as_slice() else {
        anyhow::bail!("usage: snix-capture SOCKET OUT_DIR STORE_PATH...");
    };
    let out = Path::new(out);
    let mut grpc = tonic::client::Grpc::new(unix_channel(socket.into()));
    capture_gets(&mut grpc, out, paths).await?;
    let listed = capture_list(&mut grpc, out).await?;
    println!("captured {} Get answers and {listed} List messages", paths.len());
    Ok(())
}
