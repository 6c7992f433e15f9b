//! The `.drv` output parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snix_lower_store_types::drv::parse_outputs(data);
});
