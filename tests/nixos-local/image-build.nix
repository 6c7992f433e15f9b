# Builds a lower image with the flake's lib.mkLowerImage
# (nix/mk-lower-image.nix) by real Nix in the Debian root file system, for
# the boot part of tests/nixos-local/run: `image` in format = "directory"
# and `imageErofs` in format = "erofs" (mounted by the host, then bound into
# the container as its lower), over a small closure with a text path and a
# source path.
#
# What nixpkgs would give is stood in for, with real derivations:
#   runCommand   a bash builder running the command with the inputs' bin/ on
#                PATH and the root file system's tools after them;
#   closureInfo  exportReferencesGraph with structured attributes, turned
#                into `registration` and `store-paths` as nixpkgs' closureInfo
#                lays them out (here by perl, there by jq);
#   erofs-utils  this machine's mkfs.erofs (Debian's erofs-utils) given as
#                `erofsBin` (a directory with bin/mkfs.erofs), added to the
#                store as it is; without it a placeholder that fails if used;
#   the package  the binary under test, added to the store as it is.
# Only the hosted VM test (tests/nixos/image.nix) builds the image with
# nixpkgs' own closureInfo and erofs-utils.
#
#   nix-build image-build.nix --arg repo /mnt/src --arg nixpkgs /mnt/nixpkgs \
#     --arg bin /mnt/work/image-bin [--arg erofsBin /mnt/work/erofs-bin] -A image
{
  repo,
  nixpkgs,
  bin,
  erofsBin ? null,
}:

let
  lib = import (nixpkgs + "/lib");
  system = builtins.currentSystem;
  toolPath = "/usr/bin:/bin";

  runCommand =
    name: env: buildCommand:
    let
      inputs = env.nativeBuildInputs or [ ];
      plain = removeAttrs env [
        "nativeBuildInputs"
        "passthru"
      ];
      drv = derivation (
        plain
        // {
          inherit name system;
          builder = "/bin/bash";
          args = [
            "-c"
            ''
              set -euo pipefail
              export PATH=${lib.concatMapStrings (p: "${p}/bin:") inputs}${toolPath}
              ${buildCommand}
            ''
          ];
        }
      );
    in
    drv // (env.passthru or { }) // { env = env; };

  closureInfo =
    { rootPaths }:
    derivation {
      name = "closure-info";
      inherit system;
      __structuredAttrs = true;
      exportReferencesGraph.closure = rootPaths;
      builder = "/usr/bin/perl";
      args = [
        "-MJSON::PP"
        "-e"
        ''
          open my $f, "<", $ENV{NIX_ATTRS_JSON_FILE} or die "attrs: $!";
          my $attrs = decode_json(do { local $/; <$f> });
          my $out = $attrs->{outputs}{out};
          mkdir $out or die "$out: $!";
          my @c = sort { $a->{path} cmp $b->{path} } @{ $attrs->{closure} };
          open my $r, ">", "$out/registration" or die;
          open my $p, ">", "$out/store-paths" or die;
          for my $i (@c) {
            my @refs = sort @{ $i->{references} };
            print $r join("\n", $i->{path}, $i->{narHash}, $i->{narSize}, "", scalar(@refs), @refs), "\n";
            print $p $i->{path}, "\n";
          }
        ''
      ];
    };

  erofs-utils =
    if erofsBin != null then
      builtins.path {
        path = erofsBin;
        name = "erofs-utils-host";
      }
    else
      derivation {
        name = "erofs-utils-placeholder";
        inherit system;
        builder = "/bin/sh";
        args = [
          "-c"
          "echo 'erofs-utils is not available in tests/nixos-local' >&2; exit 1"
        ];
      };

  package = builtins.path {
    path = bin;
    name = "snix-lower-store-under-test";
  };

  pkgs = {
    inherit
      lib
      runCommand
      closureInfo
      erofs-utils
      ;
    stdenv.hostPlatform.system = system;
    callPackage = lib.callPackageWith pkgs;
  };

  flake = import (repo + "/flake.nix");
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = {
      inherit lib;
      legacyPackages = { };
    };
  };

  # The closure: a text path (builtins.toFile), a source path (builtins.path)
  # and a root referring to both.
  textPath = builtins.toFile "snix-image-text" "served from the image's own index\n";
  sourcePath = builtins.path {
    path = repo + "/tests/nixos/fixtures";
    name = "snix-image-source";
  };
  root = runCommand "snix-image-root" { } ''
    mkdir -p $out
    echo ${textPath} > $out/text
    echo ${sourcePath} > $out/source
  '';
  image = outputs.lib.mkLowerImage {
    inherit pkgs package;
    rootPaths = [ root ];
    format = "directory";
  };
in
{
  inherit image;
  # No label: Debian bookworm's mkfs.erofs 1.5 has no -L (nixpkgs' has).
  imageErofs = outputs.lib.mkLowerImage {
    inherit pkgs package;
    rootPaths = [ root ];
  };
  paths = {
    closureInfo = "${image.closureInfo}";
    root = "${root}";
    text = "${textPath}";
    source = "${sourcePath}";
  };
}
