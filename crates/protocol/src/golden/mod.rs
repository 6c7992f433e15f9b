//! Golden tests: the daemon's wire codec against the bytes Nix's own unit
//! tests write (NixOS/nix 88b09c64, `src/libstore-tests/data/{worker-protocol,
//! common-protocol}`), found through `SNIX_NIX_GOLDEN` (default
//! `../shared/nix-golden` from the repository root; see [`data`]).
//!
//! For every file below that covers a type the daemon speaks, the test
//! decodes the `.bin` and compares with the values of Nix's test source
//! ([`values`]), then encodes those values and compares with the bytes, at
//! the version the file was written at. The `common-protocol/` files are
//! byte-identical to their `worker-protocol/` namesakes and run through the
//! same tests. `every_golden_file_is_in_the_table` fails when the data gains
//! a file this table does not classify.
//!
//! | file (`worker-protocol/`)                 | type, version                         | covered by |
//! |-------------------------------------------|---------------------------------------|------------|
//! | string                                    | string, 1.10                          | `string` |
//! | store-path                                | store path, 1.10                      | `store_path` |
//! | optional-store-path                       | optional store path (""=none), 1.10   | `optional_store_path` |
//! | content-address                           | CA text (path infos), 1.10            | `content_address` |
//! | optional-content-address                  | optional CA (""=none), 1.10           | `optional_content_address` |
//! | vector                                    | list of strings, 1.10 (its list of lists, never sent by the daemon, is read as a count and string lists), and the whole file as the codec's generic `Vec<String>` / `Vec<Vec<String>>` | `vector` |
//! | set                                       | sorted set of strings, 1.10 (set of sets: as for vector), and the whole file as the generic `BTreeSet<String>` / `BTreeSet<BTreeSet<String>>` | `set` |
//! | drv-output                                | DrvOutput id: the QueryRealisation request, 1.10/1.31/1.38 | `drv_output` |
//! | realisation                               | realisation JSON (1.31+ reply)        | `realisation_without_signatures`: value 1; value 2 is Nix 2.35's signature objects, not spoken |
//! | realisation-with-deps                     | realisation JSON with dependents: QueryRealisation reply at 1.31/1.35/1.38 | `realisation_with_deps` |
//! | derived-path-1.29, -1.30                  | derived path text, and as a BuildPaths request | `derived_path_1_29`, `derived_path_1_30` |
//! | build-mode                                | build mode, 1.10                      | `build_mode` |
//! | optional-trusted-flag                     | optional trusted flag, 1.10, and as the trust word of the handshake info at 1.35 | `optional_trusted_flag` |
//! | handshake-to-client                       | daemon hello (magic, version), 1.10   | `handshake_to_client` |
//! | client-handshake-info_1_30, _1_33, _1_35  | daemon version, trust                 | `client_handshake_info` |
//! | unkeyed-valid-path-info-1.15              | QueryPathInfo reply body, 1.15 (also through `wire_path_info`) | `unkeyed_valid_path_info_1_15` |
//! | valid-path-info-1.15, -1.16               | path + path info, 1.15 / 1.16 (and 1.21, 1.38) | `valid_path_info_1_15`, `valid_path_info_1_16` |
//! | build-result-*, keyed-build-result-1.29   | BuildResult                           | not spoken: BuildDerivation and BuildPathsWithResults are refused |
//! | *-realisation-with-path-not-hash          | 1.38 feature realisation layouts      | not spoken: the feature is never negotiated (FEATURES is empty) |
//!
//! `values` is checked against Nix's `.json` files in `json_check`, so a
//! slip in the table cannot make an encoder look right.

mod data;
mod json_check;
mod tests;
mod values;
