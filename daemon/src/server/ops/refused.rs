//! Ops that would write: their payload was drained when decoding, so the
//! refusal (an error naming the op and what it was about) leaves the
//! connection ready for the next request.

use super::{Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::request::*;

/// Every op here is refused the same way.
macro_rules! refused {
    ($($name:ident),* $(,)?) => {
        $(
            impl Serve for $name {
                type Body = NoReply;
                async fn serve(&self, _: &LowerStore) -> Result<Answer<NoReply>, OpError> {
                    Err(OpError::ReadOnly {
                        subject: self.subject().map(str::to_owned),
                    })
                }
            }
        )*
    };
}

refused!(
    AddToStore,
    AddTextToStore,
    AddToStoreNar,
    AddMultipleToStore,
    AddBuildLog,
    AddSignatures,
    BuildDerivation,
    CollectGarbage,
    RegisterDrvOutput,
    ImportPaths,
);

/// Obsolete: Nix clients read a path's NAR with NarFromPath.
impl Serve for ExportPath {
    type Body = NoReply;
    async fn serve(&self, _: &LowerStore) -> Result<Answer<NoReply>, OpError> {
        Err(OpError::Obsolete {
            subject: self.subject().map(str::to_owned),
            instead: "NarFromPath",
        })
    }
}
