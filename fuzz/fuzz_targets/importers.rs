//! The registration and `nix path-info --json` importers' parsers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snix_lower_store_index::import::{parse_path_info_json, parse_registration};
use snix_lower_store_types::StoreDir;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sd = StoreDir::new("/nix/store").unwrap();
    let _ = parse_registration(text, &sd, "fuzz");
    let _ = parse_path_info_json(text, &sd, "fuzz");
});
