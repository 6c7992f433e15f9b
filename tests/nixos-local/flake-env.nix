# The evaluation ground the eval files of tests/nixos-local share (eval.nix,
# boot-defects-eval.nix, nix-conf-eval.nix, rotate.nix): nixpkgs' real lib,
# the stand-ins of ./stand-ins.nix, the flake's outputs with nixpkgs stood in
# for, and a system evaluation over them.
#
#   import ./flake-env.nix { inherit repo nixpkgs; }
#
# Invariants: the module system's checks stay on (no _module.check = false);
# modules are evaluated in the order nixpkgs' base modules, [qemu-vm.nix],
# pkgs, the root file system, then the caller's, so list-merged options
# (assertions, warnings) keep one order.
{ repo, nixpkgs }:

let
  lib = import (nixpkgs + "/lib");
  si = import ./stand-ins.nix {
    inherit lib;
    nixosLib = nixpkgs + "/nixos/lib";
  };
  system = "x86_64-linux";
  # Its nix package is "nix-2.31.0": nix.nix asserts Nix >= 2.2 from it.
  pkgs = si.mkPkgs system;

  # The flake's outputs with nixpkgs stood in for.
  flake = import (repo + "/flake.nix");
  self =
    flake.outputs {
      inherit self;
      nixpkgs = {
        inherit lib;
        legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] si.mkPkgs;
      };
    }
    // {
      outPath = toString repo;
    };

  # What every real system has; the module adds to it.
  base = {
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
    };
  };
in
{
  inherit
    lib
    si
    system
    pkgs
    self
    ;

  evalConfig =
    {
      modules,
      vm ? false,
    }:
    lib.evalModules {
      modules =
        si.baseModules nixpkgs
        ++ lib.optionals vm (si.vmModules nixpkgs)
        ++ [
          { _module.args.pkgs = pkgs; }
          base
        ]
        ++ modules;
    };
}
