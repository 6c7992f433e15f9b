# Issue 21 (image rotation), NixOS side: the configurations whose
# snix-lower-store-reconcile.service tests/nixos-local/run's `rotate` part
# judges, evaluated like ./eval.nix does (nixpkgs' real lib and option
# types, the stand-ins of ./stand-ins.nix, the flake's module): for each, its
# failed assertions and the texts of the units around the reconcile.
#
#   nix-instantiate --eval --strict --json --read-write-mode rotate.nix \
#     --arg repo /path/to/repo --arg nixpkgs /path/to/nixpkgs
#
# Invariant: option paths here are the module's public interface; a renamed
# option makes a configuration fail to evaluate, which the driver reports.
{ repo, nixpkgs }:

let
  env = import ./flake-env.nix { inherit repo nixpkgs; };
  inherit (env) lib;
  evalConfig =
    extra: env.evalConfig { modules = [ env.self.nixosModules.default ] ++ lib.toList extra; };

  # The boot part's configuration with the other policy: its reconcile unit
  # replaces the refusing one in the rotate part's last boot.
  cases = import ./cases.nix { inherit lib repo; };

  secondStore = {
    enable = true;
    lower.device = "/dev/disk/by-label/lower-store";
    registrations = [ "/var/lib/snix-overlay/lower/registration" ];
  };
  systemStore = {
    enable = true;
    placement = "system-store";
    lower.device = "/dev/disk/by-label/lower-store";
    registrations = [ "/nix/.snix-lower/registration" ];
  };

  configs = {
    second-store.services.snix-lower-store = secondStore;
    second-store-invalidate.services.snix-lower-store = secondStore // {
      lower = secondStore.lower // {
        onBrokenPaths = "invalidate";
      };
    };
    second-store-state.services.snix-lower-store = secondStore // {
      overlay.state = "/srv/nix-state";
    };
    second-store-image.services.snix-lower-store = {
      enable = true;
      lower.device = "/dev/disk/by-label/lower-store";
      lower.index = "image";
    };
    second-store-bind-invalidate = cases.second-store-bind.modules ++ [
      { services.snix-lower-store.lower.onBrokenPaths = "invalidate"; }
    ];
    system-store = {
      boot.initrd.systemd.enable = true;
      services.snix-lower-store = systemStore;
    };
    system-store-refuse = {
      boot.initrd.systemd.enable = true;
      services.snix-lower-store = systemStore // {
        lower = systemStore.lower // {
          onBrokenPaths = "refuse";
        };
      };
    };
  };

  summarize =
    eval:
    let
      c = eval.config;
      text = name: c.systemd.units.${name}.text or null;
      snix = c.services.snix-lower-store;
    in
    {
      failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
      onBrokenPaths = snix.lower.onBrokenPaths;
      placement = snix.placement;
      storeUrl = snix.storeUrl;
      nixStore = "${lib.getBin c.nix.package}/bin/nix-store";
      units = lib.genAttrs [
        "snix-lower-store-reconcile.service"
        "snix-lower-store-import.service"
        "snix-lower-store-check.service"
        "snix-lower-store.socket"
        "nix-daemon.service"
      ] text;
    };
in
lib.mapAttrs (_: m: summarize (evalConfig m)) configs
