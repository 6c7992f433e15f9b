//! Arbitrary bytes as the opening of a connection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snix_lower_store_protocol::handshake::serve_handshake;
use snix_lower_store_protocol::wire::{Limits, WireReader};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut r = WireReader::new(
            std::io::Cursor::new(data),
            Limits {
                max_string: 1 << 16,
                max_list: 1 << 10,
            },
        );
        let mut sink = tokio::io::sink();
        let _ = serve_handshake(&mut r, &mut sink, "fuzz", false).await;
    });
});
