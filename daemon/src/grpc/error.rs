//! The errors of the gRPC side: addresses, channels, calls to a snix
//! `PathInfoService`, the `.drv` outputs the client reads from the lower dir,
//! and our own gRPC server.
//!
//! Invariant: each variant's Display is the whole message (the service and
//! call it concerns, and the underlying error inline), and no variant reports
//! a `source()`: the texts are the ones the daemon has always logged and sent
//! to Nix, and printing a chain (`{:#}`) cannot repeat a cause.

use snix_lower_store_types::path::StorePathError;
use snix_lower_store_types::StorePath;

use super::convert::ConvertError;

/// What went wrong talking gRPC, as a client of snix or as a server.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// `grpc+unix://` with a relative socket path.
    #[error("'{0}': grpc+unix needs an absolute socket path (grpc+unix:///run/snix/store.sock)")]
    RelativeUnixSocket(String),
    /// Not `grpc+unix://`, `grpc+http://` or `grpc+https://`.
    #[error(
        "'{0}' is not a snix service address; use grpc+unix:///path, grpc+http://host:port or grpc+https://host:port"
    )]
    NotAnAddress(String),
    /// `grpc+https://` in a build without the `tls` cargo feature.
    #[error(
        "'{0}': this snix-lower-store was built without TLS (cargo feature \"tls\", on by default); \
         use grpc+http:// or grpc+unix://, or build with --features tls"
    )]
    NoTls(String),
    /// The endpoint URI (`grpc+http://host:port`) was refused by tonic.
    #[error("{uri}: {error}")]
    Endpoint {
        uri: String,
        error: tonic::transport::Error,
    },
    /// TLS could not be set up for a `grpc+https://` endpoint.
    #[error("{uri}: TLS setup: {error}")]
    Tls {
        uri: String,
        error: tonic::transport::Error,
    },
    /// The first snapshot failed: the daemon does not start without it.
    #[error("cannot start without the metadata backend: {0}")]
    Startup(Box<GrpcError>),
    /// A call to the service failed with a gRPC status (NotFound on Get is
    /// not an error: the path is not valid).
    #[error("snix PathInfoService {address}: {call}: {code:?}: {message}")]
    Status {
        address: String,
        /// The call and its argument, e.g. `Get <hash part>` or `List`.
        call: String,
        code: tonic::Code,
        message: String,
    },
    /// The service answered with a PathInfo we cannot convert.
    #[error("snix PathInfoService {address}: {call}: {error}")]
    Convert {
        address: String,
        call: String,
        error: Box<ConvertError>,
    },
    /// The outputs of a valid derivation could not be read from the lower dir.
    #[error("{drv}: {error}")]
    Derivation { drv: StorePath, error: DrvOutputsError },
    /// `--grpc-listen` names a socket we cannot bind.
    #[error("--grpc-listen {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    /// `--grpc-listen` is neither a socket path nor host:port.
    #[error("--grpc-listen '{0}': expected unix:///path or host:port")]
    ListenAddress(String),
    /// Our gRPC server stopped with an error.
    #[error("gRPC server on {addr}: {error}")]
    Serve {
        addr: String,
        error: tonic::transport::Error,
    },
}

/// Why the outputs of a `.drv` in the lower dir are unknown.
#[derive(Debug, thiserror::Error)]
pub enum DrvOutputsError {
    /// Opening, reading or parsing the `.drv` failed ([`snix_lower_store_types::lower::LowerDir`]'s message).
    #[error(transparent)]
    Read(snix_lower_store_types::lower::LowerError),
    /// An output path is not a store path of our store directory.
    #[error("{0}")]
    OutputPath(StorePathError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts as they were when these errors were built with `format!`.
    #[test]
    fn messages_are_the_ones_logged_and_sent_before() {
        let status = GrpcError::Status {
            address: "grpc+unix:///run/snix/store.sock".into(),
            call: "Get 0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx".into(),
            code: tonic::Code::Unavailable,
            message: "transport error".into(),
        };
        assert_eq!(
            status.to_string(),
            "snix PathInfoService grpc+unix:///run/snix/store.sock: Get 0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx: Unavailable: transport error"
        );
        assert_eq!(
            GrpcError::Startup(Box::new(status)).to_string(),
            "cannot start without the metadata backend: snix PathInfoService grpc+unix:///run/snix/store.sock: \
             Get 0c4m6szjsmr1s0rsqs3kg4ni4fgcgprx: Unavailable: transport error"
        );
        let convert = GrpcError::Convert {
            address: "grpc+http://[::1]:8000".into(),
            call: "List".into(),
            error: Box::new(ConvertError::NoRootEntry),
        };
        assert_eq!(
            convert.to_string(),
            "snix PathInfoService grpc+http://[::1]:8000: List: PathInfo has no root entry"
        );
        let drv = StorePath::from_base_name("1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm-x.drv").unwrap();
        let e = GrpcError::Derivation {
            drv,
            error: DrvOutputsError::Read(snix_lower_store_types::lower::LowerError::DrvTooLarge),
        };
        assert_eq!(
            e.to_string(),
            "1n5cj1q9ykjq2y3hbqh3v3rn9wsxk0sm-x.drv: derivation is larger than 64 MiB"
        );
        let bind = GrpcError::Bind {
            addr: "unix:///x/y.sock".into(),
            error: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(bind.to_string(), "--grpc-listen unix:///x/y.sock: entity not found");
        assert_eq!(
            GrpcError::ListenAddress("nowhere".into()).to_string(),
            "--grpc-listen 'nowhere': expected unix:///path or host:port"
        );
        // No chain: the message is whole, so `{:#}` cannot repeat a cause.
        assert!(std::error::Error::source(&bind).is_none());
        let backend: crate::backend::BackendError = bind.into();
        assert_eq!(backend.to_string(), "--grpc-listen unix:///x/y.sock: entity not found");
        assert!(std::error::Error::source(&backend).is_none());
    }
}
