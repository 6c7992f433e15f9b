# nix.conf with nixpkgs' real nixos/modules/config/nix.nix (from the nixpkgs
# given, e.g. ../shared/nixpkgs), evaluated with the flake's module enabled
# and a user's experimental features written each way nix.nix's type allows:
#   - `nix.settings.extra-experimental-features` as a string and as a list
#     (before the fix, the string form did not evaluate: nix.nix's
#     `either confAtom (listOf confAtom)` cannot merge a string with the
#     module's list);
#   - `nix.settings.experimental-features` as a string.
# Returns { <case> = { ok; error; nixConf; }; }: nixConf is the text nix.nix
# renders (writeTextFile's `text`), which tests/nixos-local/nix-conf-check
# hands to real Nix 2.26 and 2.34 (`nix config show`).
#
#   nix-instantiate --eval --strict --json nix-conf-eval.nix \
#     --arg repo /path/to/repo --arg nixpkgs /path/to/nixpkgs
#
# Invariants: nix.nix is nixpkgs' own, unmodified (./stand-ins.nix's
# baseModules import it; nix.enable and nix.package are declared there as
# nix-daemon.nix declares them); the module system's checks stay on.
{
  repo,
  nixpkgs,
  debug ? false,
}:

let
  env = import ./flake-env.nix { inherit repo nixpkgs; };

  evalCase =
    user:
    let
      eval = env.evalConfig {
        modules = [
          env.self.nixosModules.default
          {
            services.snix-lower-store = {
              enable = true;
              lower.device = "/dev/disk/by-label/lower";
            };
          }
          user
        ];
      };
      conf = eval.config.environment.etc."nix/nix.conf".source;
      r =
        if debug then
          {
            success = true;
            value = conf.text;
          }
        else
          builtins.tryEval (builtins.deepSeq conf.text conf.text);
    in
    {
      ok = r.success;
      nixConf = if r.success then r.value else "";
    };
in
{
  extra-string = evalCase { nix.settings.extra-experimental-features = "flakes"; };
  extra-list = evalCase {
    nix.settings.extra-experimental-features = [
      "flakes"
      "nix-command"
    ];
  };
  plain-string = evalCase { nix.settings.experimental-features = "nix-command flakes"; };
}
