//! NarFromPath: checks that the path is valid and its object present; the
//! NAR itself is streamed by the session after STDERR_LAST (see
//! `session::Conn::stream_nar`), so memory stays constant.

use super::{Answer, LowerStore, OpError, Serve};
use snix_lower_store_protocol::request::*;

impl Serve for NarFromPath {
    type Body = NarFollows;
    async fn serve(&self, s: &LowerStore) -> Result<Answer<NarFollows>, OpError> {
        let p = s.path(&self.path)?;
        if !s.backend(s.backend.is_valid(&p).await)? {
            return Err(s.not_valid(&p));
        }
        s.lower.check_present(&p).map_err(|why| OpError::NotPresent {
            path: s.store_dir.display(&p),
            why,
        })?;
        Ok(Answer {
            log: Vec::new(),
            body: NarFollows,
            nar: Some(p),
        })
    }
}
