# Stand-in for nixpkgs' nixos/modules/virtualisation/qemu-vm.nix (which
# imports files not in ../shared/nixpkgs): the `virtualisation.fileSystems`
# override of tests/nixos-local/stand-ins.nix, what tests/module-eval.nix's
# "${modulesPath}/virtualisation/qemu-vm.nix" imports here.
{
  lib,
  config,
  utils,
  ...
}@args:
(import ../../../nixos-local/stand-ins.nix {
  inherit lib;
  nixosLib = throw "qemu-vm.nix stand-in: nixosLib is not needed";
}).vmModule
  args
