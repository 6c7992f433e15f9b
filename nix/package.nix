# The snix-lower-store package: the daemon binary and, for systemd outside
# NixOS, the unit files of systemd/ in lib/systemd/system (the NixOS module
# defines its own units and does not use these).
#
# Invariant: the source set holds every workspace member (daemon, e2e, bench, testbed)
# and what their builds read (daemon/build.rs compiles daemon/proto), so
# `cargo build --offline --locked` works on exactly this set.
{
  lib,
  rustPlatform,
}:

let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "snix-lower-store";
  inherit (workspace.workspace.package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      # Every member of the workspace must be present or cargo stops at
      # "failed to load manifest for workspace member".
      ../crates
      ../daemon
      ../e2e
      ../bench
      ../testbed
      ../systemd
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "snix-lower-store"
  ];
  # checkPhase runs the product crates' tests (cargoTestFlags): the unit
  # tests of the types, protocol and index crates and of the daemon, every
  # file in daemon/tests/ (ops, import, import_batches, grpc, image,
  # reliability, progress) and its examples' builds. They use temporary
  # directories, Unix sockets and a TCP listener on 127.0.0.1 (grpc.rs; the
  # build sandbox has a loopback interface), need no network beyond it, and
  # adapt to the uid they run as: ops.rs, and image.rs, whose read-only bind
  # mount case needs root and skips as a builder (SNIX_ALLOW_SKIP below; it
  # must run under CI=true, which runs as root). Not run here: e2e (needs root, chroots of
  # Debian with real Nix, OverlayFS) and bench (one unit test in
  # bench/src/gen.rs, run by scripts/test.sh's workspace tests).
  cargoTestFlags = [
    "--package"
    "snix-lower-store-types"
    "--package"
    "snix-lower-store-protocol"
    "--package"
    "snix-lower-store-index"
    "--package"
    "snix-lower-store"
  ];
  # The golden tests read Nix's own encodings from outside the source set
  # (SNIX_NIX_GOLDEN, ../shared/nix-golden beside a clone), and image.rs's
  # bind-mount case needs root: in the build sandbox both may skip, and say
  # so. scripts/test.sh runs them (CI=true never skips).
  env.SNIX_ALLOW_SKIP = "1";

  postInstall = ''
    install -D -m 0644 -t $out/lib/systemd/system \
      systemd/snix-lower-store.service systemd/snix-lower-store.socket
    substituteInPlace $out/lib/systemd/system/snix-lower-store.service \
      --replace-fail /usr/local/bin/snix-lower-store $out/bin/snix-lower-store
  '';

  meta = {
    description = "Read-only nix-daemon serving a shared store as the lower layer of Nix's local-overlay store";
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "snix-lower-store";
    platforms = lib.platforms.linux;
  };
}
