# What tests/module-eval.nix's "${modulesPath}/virtualisation/qemu-vm.nix"
# imports here: nixpkgs' real qemu-vm.nix from ../shared/nixpkgs (the
# `snixNixpkgs` special argument of ../../default.nix), through
# tests/nixos-local/stand-ins.nix's wrapper, which stands in for the two files
# it imports that are not copied.
{ lib, snixNixpkgs, ... }:
{
  imports = [
    (
      (import ../../../nixos-local/stand-ins.nix {
        inherit lib;
        nixosLib = snixNixpkgs + "/nixos/lib";
      }).qemuVmModule
      snixNixpkgs
    )
  ];
}
