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
      ../daemon
      ../e2e
      ../systemd
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "snix-lower-store"
  ];
  # The daemon's unit and socket tests run in the sandbox (checkPhase); the
  # end-to-end suite needs root and Debian chroots and is not run here.
  cargoTestFlags = [
    "--package"
    "snix-lower-store"
  ];

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
