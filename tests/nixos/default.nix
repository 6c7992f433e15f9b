# The NixOS VM tests, each a pkgs.testers.runNixOSTest derivation.
{ pkgs, self }:

let
  common = import ./common.nix { inherit pkgs self; };
  args = { inherit pkgs common; };
in
{
  basic = import ./basic.nix args;
  socket-activation = import ./socket-activation.nix args;
  switch = import ./switch.nix args;
  lower-missing = import ./lower-missing.nix args;
  fixed = import ./fixed.nix args;
  system-store = import ./system-store.nix args;
  system-store-image = import ./system-store.nix (args // { index = "image"; });
  image = import ./image.nix args;
}
