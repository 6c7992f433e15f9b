//! Our backend served as snix's `PathInfoService`, so one index can back many
//! hosts and snix tooling can read it: Get and List answered, Put refused
//! (PERMISSION_DENIED), CalculateNAR UNIMPLEMENTED; plus the standard gRPC
//! health service. Castore root entries are computed from the lower dir on
//! first use and kept in a bounded cache. Derivers are written in the
//! [`DeriverName`] form chosen at start (default: with ".drv").

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::grpc::castore::root_entry;
use crate::grpc::convert::{to_snix, DeriverName};
use crate::grpc::error::GrpcError;
use crate::grpc::proto::castore::Entry;
use crate::grpc::proto::store::path_info_service_server::{PathInfoService, PathInfoServiceServer};
use crate::grpc::proto::store::{
    get_path_info_request, CalculateNarResponse, GetPathInfoRequest, ListPathInfoRequest, PathInfo as SnixPathInfo,
};
use crate::server::ops::LowerStore;
use snix_lower_store_types::hash::nix32_encode;
use snix_lower_store_types::StorePath;

const ENTRY_CACHE_MAX: usize = 100_000;

pub(crate) struct PathInfoServer {
    store: Arc<crate::server::Server>,
    entries: Mutex<HashMap<StorePath, Entry>>,
    deriver_name: DeriverName,
}

impl PathInfoServer {
    pub fn new(store: Arc<crate::server::Server>, deriver_name: DeriverName) -> Self {
        PathInfoServer {
            store,
            entries: Mutex::new(HashMap::new()),
            deriver_name,
        }
    }

    fn lower_store(&self) -> &LowerStore {
        &self.store.store
    }

    async fn entry(&self, p: &StorePath) -> Result<Entry, Status> {
        if let Some(e) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(p) {
            return Ok(e.clone());
        }
        let object = self.lower_store().lower.object(p);
        let name = p.base_name().to_owned();
        let e = tokio::task::spawn_blocking(move || root_entry(&object, &name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(format!("{p}: reading it from the lower dir: {e}")))?;
        let mut cache = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= ENTRY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(p.clone(), e.clone());
        Ok(e)
    }

    async fn snix_info(&self, p: &StorePath) -> Result<Option<SnixPathInfo>, Status> {
        let info = self
            .lower_store()
            .backend
            .path_info(p)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let Some(info) = info else { return Ok(None) };
        let entry = self.entry(p).await?;
        to_snix(&info, entry, self.deriver_name)
            .map(Some)
            .map_err(|e| Status::failed_precondition(format!("{p}: {e}")))
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<SnixPathInfo, Status>> + Send>>;

#[tonic::async_trait]
impl PathInfoService for Arc<PathInfoServer> {
    async fn get(&self, req: Request<GetPathInfoRequest>) -> Result<Response<SnixPathInfo>, Status> {
        let Some(get_path_info_request::ByWhat::ByOutputHash(digest)) = req.into_inner().by_what else {
            return Err(Status::invalid_argument("Get needs by_output_hash"));
        };
        if digest.len() != 20 {
            return Err(Status::invalid_argument(format!(
                "by_output_hash has {} bytes, a store path digest has 20",
                digest.len()
            )));
        }
        let hash_part = nix32_encode(&digest);
        let path = self
            .lower_store()
            .backend
            .path_from_hash_part(&hash_part)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no path with hash {hash_part}")))?;
        match self.snix_info(&path).await? {
            Some(p) => Ok(Response::new(p)),
            None => Err(Status::not_found(format!("no path with hash {hash_part}"))),
        }
    }

    async fn put(&self, _req: Request<SnixPathInfo>) -> Result<Response<SnixPathInfo>, Status> {
        Err(Status::permission_denied(
            "snix-lower-store serves a read-only index; Put is refused",
        ))
    }

    async fn calculate_nar(&self, _req: Request<Entry>) -> Result<Response<CalculateNarResponse>, Status> {
        Err(Status::unimplemented(
            "CalculateNAR needs a castore, which snix-lower-store does not have; the NAR hash of every path is in Get",
        ))
    }

    type ListStream = ListStream;

    async fn list(&self, _req: Request<ListPathInfoRequest>) -> Result<Response<ListStream>, Status> {
        let paths = self
            .lower_store()
            .backend
            .all_paths()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let me = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for p in paths {
                let item = match me.snix_info(&p).await {
                    Ok(Some(info)) => Ok(info),
                    Ok(None) => continue, // vanished between listing and reading: cannot happen with an index that only grows
                    Err(e) => Err(e),
                };
                if tx.send(item).await.is_err() {
                    return; // client went away
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// Serve PathInfoService and health on `addr` (`unix:///path`, a path, or
/// host:port), derivers written with ".drv" (the default form).
pub async fn serve(server: Arc<crate::server::Server>, addr: &str) -> Result<(), GrpcError> {
    serve_with(server, addr, DeriverName::default()).await
}

/// [`serve`], derivers written in the `deriver_name` form.
pub async fn serve_with(
    server: Arc<crate::server::Server>,
    addr: &str,
    deriver_name: DeriverName,
) -> Result<(), GrpcError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<PathInfoServiceServer<Arc<PathInfoServer>>>()
        .await;
    let svc = PathInfoServiceServer::new(Arc::new(PathInfoServer::new(server, deriver_name)));
    let router = tonic::transport::Server::builder().add_service(health).add_service(svc);
    let unix = addr
        .strip_prefix("unix://")
        .or_else(|| addr.starts_with('/').then_some(addr));
    if let Some(path) = unix {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path).map_err(|error| GrpcError::Bind {
            addr: addr.to_owned(),
            error,
        })?;
        tracing::info!(grpc_listen = addr, "serving snix.store.v1.PathInfoService");
        router
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l))
            .await
            .map_err(|error| GrpcError::Serve {
                addr: addr.to_owned(),
                error,
            })
    } else {
        let sa: std::net::SocketAddr = addr.parse().map_err(|_| GrpcError::ListenAddress(addr.to_owned()))?;
        tracing::info!(grpc_listen = addr, "serving snix.store.v1.PathInfoService");
        router.serve(sa).await.map_err(|error| GrpcError::Serve {
            addr: addr.to_owned(),
            error,
        })
    }
}
