//! Arbitrary client bytes after a handshake: the first byte picks the
//! negotiated version (1.21-1.38), the rest is decoded as a stream of
//! requests. Decoding must end in a request or a ProtocolError, never a
//! panic or an allocation beyond the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snix_lower_store_protocol::request::{read_request, Op};
use snix_lower_store_protocol::wire::{Limits, WireReader};
use snix_lower_store_protocol::ProtoVersion;

fuzz_target!(|data: &[u8]| {
    let Some((&v, rest)) = data.split_first() else { return };
    let version = ProtoVersion(21 + v % 18);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut r = WireReader::new(
            std::io::Cursor::new(rest),
            Limits {
                max_string: 1 << 16,
                max_list: 1 << 10,
            },
        )
        .with_version(version);
        loop {
            let Ok(word) = r.u64().await else { return };
            let Some(op) = Op::from_u64(word % 64) else { return };
            match read_request(&mut r, op).await {
                Ok(req) => {
                    let _ = (req.op(), req.subject());
                }
                Err(_) => return,
            }
        }
    });
});
