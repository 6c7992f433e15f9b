//! The framed-data reader and the unframed NAR skipper (old AddToStore).
#![no_main]
use libfuzzer_sys::fuzz_target;
use snix_lower_store_protocol::nar_skip::skip_nar;
use snix_lower_store_protocol::wire::{Limits, WireReader};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let limits = Limits {
            max_string: 1 << 16,
            max_list: 1 << 10,
        };
        let mut r = WireReader::new(std::io::Cursor::new(data), limits);
        let _ = r.drain_framed().await;
        let mut r = WireReader::new(std::io::Cursor::new(data), limits);
        let _ = skip_nar(&mut r).await;
    });
});
