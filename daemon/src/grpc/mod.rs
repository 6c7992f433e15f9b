//! snix's gRPC API (packages `snix.castore.v1` and `snix.store.v1`, compiled
//! from `daemon/proto` at build time) and what we do with it:
//!
//! - [`client`]: a [`crate::backend::Backend`] reading path infos from a snix
//!   `PathInfoService` (e.g. `snix-store daemon`), with a List snapshot for the
//!   reverse lookups the service has no call for;
//! - `crate::server::grpc` (a front-end of the daemon's server, beside the
//!   worker-protocol sessions): our backend served as `PathInfoService`
//!   (Get, List; writes refused) plus the standard gRPC health service;
//! - [`convert`]: snix `PathInfo` ⇄ Nix path info, exactly;
//! - [`castore`]: castore digests (BLAKE3 Merkle tree) of a lower-dir object,
//!   which snix's `PathInfo.entry` carries.

pub(crate) mod castore;
pub mod client;
pub mod convert;
pub mod error;
#[cfg(test)]
mod snix_fixtures;

pub use error::GrpcError;

/// Generated code, nested as the proto packages are so cross-package
/// references resolve.
pub mod proto {
    pub mod snix {
        pub mod castore {
            pub mod v1 {
                tonic::include_proto!("snix.castore.v1");
            }
        }
        pub mod store {
            pub mod v1 {
                tonic::include_proto!("snix.store.v1");
            }
        }
    }
    pub use snix::castore::v1 as castore;
    pub use snix::store::v1 as store;
}

/// A service address in snix's syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// `grpc+unix:///run/snix/store.sock`
    Unix(std::path::PathBuf),
    /// `grpc+http://host:port`
    Http(String),
    /// `grpc+https://host:port`
    Https(String),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, GrpcError> {
        let bare = s.split('?').next().unwrap_or(s);
        if let Some(p) = bare.strip_prefix("grpc+unix://") {
            if !p.starts_with('/') {
                return Err(GrpcError::RelativeUnixSocket(s.to_owned()));
            }
            Ok(Address::Unix(p.into()))
        } else if let Some(h) = bare.strip_prefix("grpc+http://") {
            Ok(Address::Http(h.trim_end_matches('/').to_owned()))
        } else if let Some(h) = bare.strip_prefix("grpc+https://") {
            if !cfg!(feature = "tls") {
                return Err(GrpcError::NoTls(s.to_owned()));
            }
            Ok(Address::Https(h.trim_end_matches('/').to_owned()))
        } else {
            Err(GrpcError::NotAnAddress(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("grpc+unix:///run/snix/store.sock").unwrap(),
            Address::Unix("/run/snix/store.sock".into())
        );
        assert_eq!(
            Address::parse("grpc+http://[::1]:8000").unwrap(),
            Address::Http("[::1]:8000".into())
        );
        assert_eq!(
            Address::parse("grpc+unix://relative").unwrap_err().to_string(),
            "'grpc+unix://relative': grpc+unix needs an absolute socket path (grpc+unix:///run/snix/store.sock)"
        );
        assert_eq!(
            Address::parse("http://x").unwrap_err().to_string(),
            "'http://x' is not a snix service address; use grpc+unix:///path, grpc+http://host:port or grpc+https://host:port"
        );
    }

    #[test]
    #[cfg(feature = "tls")]
    fn https_with_the_tls_feature() {
        assert_eq!(
            Address::parse("grpc+https://snix.example:443/").unwrap(),
            Address::Https("snix.example:443".into())
        );
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn https_without_the_tls_feature_names_it() {
        assert_eq!(
            Address::parse("grpc+https://snix.example:443").unwrap_err().to_string(),
            "'grpc+https://snix.example:443': this snix-lower-store was built without TLS (cargo feature \"tls\", \
             on by default); use grpc+http:// or grpc+unix://, or build with --features tls"
        );
    }
}
