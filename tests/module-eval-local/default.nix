# Evaluates tests/module-eval.nix -- the flake's `checks.<system>.module-eval`
# -- on this machine, without a nixpkgs checkout: `nixpkgs.lib.nixosSystem`
# is lib.evalModules over tests/nixos-local/stand-ins.nix's baseModules:
# nixpkgs' real nix.nix (nix.conf rendering, the nix.settings type),
# assertions.nix, filesystems.nix (fileSystems types, /etc/fstab) and
# filesystems/{erofs,squashfs,overlayfs}.nix from ../shared/nixpkgs, stand-ins
# for the rest (systemd units rendered by nixpkgs' systemd-lib, placeholder
# packages, the other options typed as nixpkgs declares them); a VM's
# "${modulesPath}/virtualisation/qemu-vm.nix" is nixpkgs' real one.
#
#   nix-instantiate --eval --strict --json --read-write-mode default.nix \
#     --arg repo /path/to/repo --arg nixpkgs /path/to/nixpkgs -A report
#
# Returns { report; failed; } where report is the text the hosted check
# prints (one "PASS name" / "FAIL name" line per check) and failed its failed
# checks' names.
#
# Invariants: tests/module-eval.nix is evaluated as the flake evaluates it
# (same arguments: pkgs, self = the flake's outputs, nixpkgs);
# `system.build.toplevel.drvPath` throws on a
# failed assertion, as NixOS's top-level.nix does; `_module.check` stays on.
{
  repo,
  nixpkgs,
}:

let
  lib = import (nixpkgs + "/lib");
  si = import (repo + "/tests/nixos-local/stand-ins.nix") {
    inherit lib;
    nixosLib = nixpkgs + "/nixos/lib";
  };
  system = "x86_64-linux";
  # nix.nix asserts the Nix version (>= 2.2) through cfg.package.out.
  standInPkgs = si.mkPkgs system;
  nixPackage = standInPkgs.nix // {
    name = "nix-2.31.2";
    version = "2.31.2";
    out = nixPackage;
  };
  pkgs = standInPkgs // {
    callPackage = lib.callPackageWith pkgs;
    # runCommand's passthru is on the derivation, as nixpkgs' is.
    runCommand =
      name: env: text:
      standInPkgs.runCommand name env text // env.passthru or { };
    # The package's attributes (src), as mkDerivation exposes them.
    rustPlatform.buildRustPackage =
      args:
      let
        drv = standInPkgs.rustPlatform.buildRustPackage args;
        withSrc = d: d // { inherit (drv.buildRustPackageArgs) src; };
      in
      withSrc drv // { overrideAttrs = f: withSrc (drv.overrideAttrs f); };
    nix = nixPackage;
    dosfstools = standInPkgs.writeText "dosfstools-stand-in" "";
    hello = standInPkgs.writeText "hello-2.12.2" "a stand-in for pkgs.hello\n";
  };

  # The system derivation's refusal of failed assertions (top-level.nix).
  glue =
    { config, ... }:
    let
      failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
    in
    {
      config.system.build.toplevel = {
        type = "derivation";
        name = "nixos-system";
        drvPath =
          if failed != [ ] then
            throw "Failed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
          else
            builtins.deepSeq (lib.mapAttrs (_: u: u.text) config.systemd.units) (
              "/nix/store/${si.fakeHash}-nixos-system.drv"
            );
      };
    };

  nixosSystem =
    { modules, ... }:
    lib.evalModules {
      specialArgs = {
        modulesPath = toString ./modules;
        # For ./modules/virtualisation/qemu-vm.nix (nixpkgs' own, wrapped).
        snixNixpkgs = nixpkgs;
      };
      modules =
        si.baseModules nixpkgs
        ++ [
          glue
          { _module.args.pkgs = pkgs; }
        ]
        ++ modules;
    };

  nixpkgsShim = {
    lib = lib // {
      inherit nixosSystem;
    };
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: pkgs);
  };
  flake = import (repo + "/flake.nix");
  self =
    flake.outputs {
      inherit self;
      nixpkgs = nixpkgsShim;
    }
    // {
      outPath = toString repo;
    };

  check = import (repo + "/tests/module-eval.nix") {
    inherit pkgs self;
    nixpkgs = nixpkgsShim;
  };
  report = check.env.report;
in
{
  inherit report;
  failed = lib.filter (l: lib.hasPrefix "FAIL " l) (lib.splitString "\n" report);
}
