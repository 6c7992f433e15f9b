# Evaluates NixOS configurations using the module (no VM, nothing built but
# a text file) and checks the values it produces, and that impossible
# combinations are refused with their assertion messages.
{
  pkgs,
  self,
  nixpkgs,
}:

let
  inherit (pkgs) lib;

  eval =
    module:
    nixpkgs.lib.nixosSystem {
      modules = [
        self.nixosModules.default
        {
          nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
          boot.loader.grub.enable = false;
          fileSystems."/" = {
            device = "/dev/vda";
            fsType = "ext4";
          };
          system.stateVersion = "25.05";
        }
        module
      ];
    };

  failedAssertions = c: map (a: a.message) (lib.filter (a: !a.assertion) c.config.assertions);

  # The merged store is /nix/store, the lower image mounted in the initrd.
  systemStore = eval {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      lower.device = "/dev/disk/by-label/lower-store";
      nix.enable = true;
    };
  };

  # A second store under its own root.
  secondStore = eval {
    services.snix-lower-store = {
      enable = true;
      lower.device = "/dev/disk/by-label/lower-store";
      overlay.root = "/var/lib/snix-overlay";
      registrations = [ "/var/lib/snix-overlay/lower/registration" ];
      logLevel = "debug";
      idleExitAfter = "10m";
      socket.group = "nixbld";
      socket.mode = "0660";
      extraArgs = [
        "--max-list"
        "1000"
      ];
    };
  };

  refused =
    module:
    failedAssertions (eval {
      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-label/lower-store";
      }
      // module;
    });

  sys = systemStore.config;
  sec = secondStore.config;

  checks = {
    "system store: nix.settings.store is the CLI's URL" =
      sys.nix.settings.store
      == "local-overlay://?lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/nix/.snix-lower/nix/store&upper-layer=/nix/.snix-rw/upper&check-mount=true";
    "system store: local-overlay-store enabled" = lib.elem "local-overlay-store" sys.nix.settings.experimental-features;
    "system store: overlay options" =
      lib.all (o: lib.elem o sys.fileSystems."/nix/store".options) [
        "lowerdir=/nix/.snix-lower/nix/store"
        "upperdir=/nix/.snix-rw/upper"
        "workdir=/nix/.snix-rw/work"
        "x-initrd.mount"
        "x-systemd.requires-mounts-for=/sysroot/nix/.snix-lower/nix/store"
        "x-systemd.requires-mounts-for=/sysroot/nix/.snix-rw/upper"
        "x-systemd.requires-mounts-for=/sysroot/nix/.snix-rw/work"
      ];
    "system store: lower mounted in the initrd" = sys.fileSystems."/nix/.snix-lower".neededForBoot;
    "system store: initrd links" =
      sys.boot.initrd.systemd.services.snix-lower-store-initrd-paths.requiredBy == [
        "sysroot-nix-store.mount"
      ];
    "system store: nix-daemon requires socket and overlay" =
      lib.all (u: lib.elem u sys.systemd.services.nix-daemon.requires) [
        "snix-lower-store.socket"
        "nix-store.mount"
      ];
    "system store: no assertion fails" = failedAssertions systemStore == [ ];
    "system store: evaluates to a system" = lib.hasSuffix ".drv" systemStore.config.system.build.toplevel.drvPath;

    "second store: no nix.settings.store" = !(sec.nix.settings ? store);
    "second store: URL in /etc" =
      sec.environment.etc."snix-lower-store/store-url".text
      == "local-overlay://?root=/var/lib/snix-overlay&lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/var/lib/snix-overlay/lower/nix/store&upper-layer=/var/lib/snix-overlay/upper&check-mount=true\n";
    "second store: lower not needed for boot, nofail" =
      let
        fs = sec.fileSystems."/var/lib/snix-overlay/lower";
      in
      !fs.neededForBoot
      && lib.elem "nofail" fs.options
      && lib.elem "x-systemd.device-timeout=90s" fs.options;
    "second store: overlay at <root>/nix/store" =
      lib.elem "lowerdir=/var/lib/snix-overlay/lower/nix/store"
        sec.fileSystems."/var/lib/snix-overlay/nix/store".options;
    "second store: daemon environment" =
      let
        env = sec.systemd.services.snix-lower-store.environment;
      in
      env.SNIX_LOWER_STORE_LOWER_DIR == "/var/lib/snix-overlay/lower/nix/store"
      && env.SNIX_LOWER_STORE_LOG_LEVEL == "debug"
      && env.SNIX_LOWER_STORE_IDLE_EXIT_AFTER == "10m"
      && env.SNIX_LOWER_STORE_STATE_DIR == "/var/lib/snix-lower-store";
    "second store: daemon bound to the lower mount" =
      sec.systemd.services.snix-lower-store.bindsTo == [ "var-lib-snix\\x2doverlay-lower.mount" ];
    "second store: extraArgs in ExecStart" =
      lib.last sec.systemd.services.snix-lower-store.serviceConfig.ExecStart
      == "${lib.getExe sec.services.snix-lower-store.package} serve \"--max-list\" \"1000\"";
    "second store: socket drop-in" =
      let
        s = sec.systemd.sockets.snix-lower-store.socketConfig;
      in
      s.ListenStream == [
        ""
        "/run/snix-lower-store/socket"
      ]
      && s.SocketMode == "0660"
      && s.SocketGroup == "nixbld";
    "second store: import of the registration" =
      sec.systemd.services.snix-lower-store-import.serviceConfig.ExecStart == [
        "${lib.getExe sec.services.snix-lower-store.package} import --registration \"/var/lib/snix-overlay/lower/registration\""
      ];
    "second store: units from the package" = lib.elem sec.services.snix-lower-store.package sec.systemd.packages;
    "second store: no assertion fails" = failedAssertions secondStore == [ ];
    "second store: evaluates to a system" = lib.hasSuffix ".drv" secondStore.config.system.build.toplevel.drvPath;

    "refused: /nix/store without systemd initrd" = lib.any (lib.hasInfix "boot.initrd.systemd.enable") (
      refused { }
    );
    "refused: overlay.mountPoint elsewhere than <root>/nix/store" =
      lib.any (lib.hasInfix "overlay.mountPoint") (refused {
        overlay.root = "/srv/o";
        overlay.mountPoint = "/srv/o/store";
      });
    "refused: upper inside the merged store" = lib.any (lib.hasInfix "overlay.upperDir and overlay.workDir must lie outside") (refused {
      overlay.root = "/srv/o";
      overlay.upperDir = "/srv/o/nix/store/upper";
    });
    "refused: stateDir outside /var/lib" = lib.any (lib.hasInfix "stateDir") (refused {
      overlay.root = "/srv/o";
      stateDir = "/srv/index";
    });
    "refused: lower storeDir outside the lower mount" =
      lib.any (lib.hasInfix "lower.storeDir") (refused {
        overlay.root = "/srv/o";
        lower.storeDir = "/elsewhere/nix/store";
      });
  };

  failed = lib.attrNames (lib.filterAttrs (_: ok: !ok) checks);
in
pkgs.runCommand "snix-lower-store-module-eval"
  {
    report = lib.concatStrings (
      lib.mapAttrsToList (name: ok: "${if ok then "PASS" else "FAIL"} ${name}\n") checks
    );
    passAsFile = [ "report" ];
  }
  ''
    cat "$reportPath"
    ${lib.optionalString (failed != [ ]) "exit 1"}
    cp "$reportPath" $out
  ''
