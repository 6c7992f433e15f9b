# Evaluates NixOS configurations using the module (no VM, nothing built but
# a text file) and checks the values it produces, and that impossible
# combinations are refused with their assertion messages. Each check named
# "N: ..." covers failure N of issue 12; "14: ..." the lower images of
# issue 14 (lower.index = "image", mkLowerImage).
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
  refusedWith = infix: c: lib.any (lib.hasInfix infix) (failedAssertions c);

  device = "/dev/disk/by-label/lower-store";

  # enable = true and nothing else.
  enableOnly = eval { services.snix-lower-store.enable = true; };

  # The second store with a device: the default placement.
  secondStore = eval {
    services.snix-lower-store = {
      enable = true;
      lower.device = device;
      registrations = [
        "/var/lib/snix-overlay/lower/registration"
        ./module-eval.nix
      ];
      logLevel = "debug";
      idleExitAfter = "10m";
      environmentFile = "/run/secrets/snix.env";
      extraArgs = [
        "--max-list"
        "1000"
      ];
    };
    nix.settings.experimental-features = "nix-command flakes";
  };

  # Only the socket's options differ from secondStore.
  socketChanged = eval {
    services.snix-lower-store = {
      enable = true;
      lower.device = device;
      registrations = [
        "/var/lib/snix-overlay/lower/registration"
        ./module-eval.nix
      ];
      logLevel = "debug";
      idleExitAfter = "10m";
      environmentFile = "/run/secrets/snix.env";
      extraArgs = [
        "--max-list"
        "1000"
      ];
      socket.path = "/run/lower-alt.sock";
      socket.mode = "0660";
      socket.group = "nixbld";
    };
    nix.settings.experimental-features = "nix-command flakes";
  };

  # The merged store as /nix/store.
  systemStore = eval {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      placement = "system-store";
      lower.device = device;
      registrations = [ "/nix/.snix-lower/registration" ];
    };
    environment.variables.NIX_CONFIG = "show-trace = true";
  };

  # A test VM of the second store that still copies the mounts itself (as
  # tests/nixos did before the module declared them in the VM).
  vm = eval (
    { config, modulesPath, ... }:
    {
      imports = [ "${modulesPath}/virtualisation/qemu-vm.nix" ];
      virtualisation.fileSystems = config.services.snix-lower-store.mounts;
      services.snix-lower-store = {
        enable = true;
        lower.device = device;
      };
    }
  );

  # The second store with another lower device, otherwise the same.
  secondStoreOtherDevice = eval {
    services.snix-lower-store = {
      enable = true;
      lower.device = "/dev/disk/by-label/other-lower-store";
      registrations = [
        "/var/lib/snix-overlay/lower/registration"
        ./module-eval.nix
      ];
      logLevel = "debug";
      idleExitAfter = "10m";
      environmentFile = "/run/secrets/snix.env";
      extraArgs = [
        "--max-list"
        "1000"
      ];
    };
    nix.settings.experimental-features = "nix-command flakes";
  };

  # The system store with another lower device, otherwise the same.
  systemStoreOtherDevice = eval {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      placement = "system-store";
      lower.device = "/dev/disk/by-label/other-lower-store";
      registrations = [ "/nix/.snix-lower/registration" ];
    };
    environment.variables.NIX_CONFIG = "show-trace = true";
  };

  # The system store with other socket options, otherwise the same.
  systemStoreSocketChanged = eval {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      placement = "system-store";
      lower.device = device;
      registrations = [ "/nix/.snix-lower/registration" ];
      socket.path = "/run/lower-alt.sock";
    };
    environment.variables.NIX_CONFIG = "show-trace = true";
  };

  # The second store with the lower mounted by the user.
  ownLower = eval {
    services.snix-lower-store = {
      enable = true;
      lower.mount = false;
      lower.mountPoint = "/srv/lower";
      registrations = [ "/srv/lower/registration" ];
    };
  };

  vmWithout = eval (
    { modulesPath, ... }:
    {
      imports = [ "${modulesPath}/virtualisation/qemu-vm.nix" ];
      services.snix-lower-store = {
        enable = true;
        lower.device = device;
      };
    }
  );

  # lower.index = "image": the image's own index, no import.
  imageIndex = eval {
    services.snix-lower-store = {
      enable = true;
      lower.device = device;
      lower.index = "image";
    };
  };
  img = imageIndex.config;
  # The flake's image builder, with nixpkgs' closureInfo and erofs-utils.
  lowerImage = self.lib.mkLowerImage {
    inherit pkgs;
    rootPaths = [ pkgs.hello ];
  };

  sec = secondStore.config;
  sys = systemStore.config;
  unitText = c: name: c.config.systemd.units.${name}.text;
  # /etc/nix/nix.conf as nixpkgs' nix.nix renders it: it sets `.source` (a
  # writeTextFile derivation), not `.text`; the derivation's `text` attribute
  # when it has one, else the built file (import from derivation).
  nixConfText =
    c:
    let
      etc = c.config.environment.etc."nix/nix.conf";
    in
    if etc.text != null then etc.text else etc.source.text or (builtins.readFile etc.source);
  exe = lib.getExe' sec.services.snix-lower-store.package "snix-lower-store";

  checks = {
    "1: the package's source set has every workspace member" =
      let
        src = self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store.src;
      in
      lib.all (m: builtins.pathExists "${src}/${m}/Cargo.toml") [
        "daemon"
        "e2e"
        "bench"
      ];

    "2: a VM as a user writes it has the second-store mounts (the module declares them in qemu-vm.nix's virtualisation.fileSystems)" =
      vmWithout.config.fileSystems ? "/var/lib/snix-overlay/nix/store"
      && vmWithout.config.fileSystems ? "/var/lib/snix-overlay/lower";
    "2: a VM that still copies mounts into virtualisation.fileSystems has them, each mount option once" =
      let
        opts = mp: vm.config.fileSystems.${mp}.options;
        once = l: lib.length l == lib.length (lib.unique l);
      in
      vm.config.fileSystems ? "/var/lib/snix-overlay/nix/store"
      && vm.config.fileSystems ? "/var/lib/snix-overlay/lower"
      && once (opts "/var/lib/snix-overlay/lower")
      && once (
        lib.filter (o: !lib.hasPrefix "x-systemd.requires-mounts-for=" o) (
          opts "/var/lib/snix-overlay/nix/store"
        )
      );

    "3: enable alone is refused for want of a device" =
      refusedWith "services.snix-lower-store.lower.device is not set" enableOnly;
    "3: the default placement leaves /nix/store alone" =
      !(sec.fileSystems ? "/nix/store") && sec.services.snix-lower-store.placement == "second-store";
    "3: second-store mounts are nofail" =
      lib.elem "nofail" sec.fileSystems."/var/lib/snix-overlay/lower".options
      && lib.elem "nofail" sec.fileSystems."/var/lib/snix-overlay/nix/store".options;
    "3: system-store without systemd in the initrd is refused" =
      refusedWith "boot.initrd.systemd.enable"
        (eval {
          services.snix-lower-store = {
            enable = true;
            placement = "system-store";
            lower.device = device;
            registrations = [ "/nix/.snix-lower/registration" ];
          };
        });
    "3: system-store without registrations is refused" =
      refusedWith "must hold this system's closure"
        (eval {
          boot.initrd.systemd.enable = true;
          services.snix-lower-store = {
            enable = true;
            placement = "system-store";
            lower.device = device;
          };
        });
    "3: system-store is mounted in the initrd, not in stage 2's fstab" =
      !(sys.fileSystems ? "/nix/store")
      && lib.any (m: m.where == "/sysroot/nix/store") sys.boot.initrd.systemd.mounts
      && lib.any (m: m.where == "/sysroot/nix/.snix-lower") sys.boot.initrd.systemd.mounts;
    "3: nix-daemon's store follows the mount, not the switch" =
      lib.hasInfix "EnvironmentFile=-/run/snix-lower-store-nix/nix-daemon.env" (
        unitText systemStore "nix-daemon.service"
      );

    "4: experimental-features as a string still evaluates, with local-overlay-store added" =
      let
        conf = nixConfText secondStore;
      in
      lib.hasInfix "experimental-features = nix-command flakes" conf
      && lib.hasInfix "extra-experimental-features = local-overlay-store" conf;

    "5: a registration given as a Nix path is in the store" =
      let
        start = unitText secondStore "snix-lower-store-import.service";
      in
      lib.hasInfix "import --registration \"/var/lib/snix-overlay/lower/registration\"" start
      && lib.hasInfix "-module-eval.nix\"" start
      && lib.hasInfix "--registration \"${builtins.storeDir}/" start;

    "6: a socket-only change changes the import unit (restarted on switch)" =
      unitText secondStore "snix-lower-store-import.service"
      != unitText socketChanged "snix-lower-store-import.service";
    "6: a socket-only change leaves the daemon unit as it is" =
      unitText secondStore "snix-lower-store.service"
      == unitText socketChanged "snix-lower-store.service";
    "6: the store URL follows socket.path" =
      lib.hasInfix "unix%3A///run/lower-alt.sock"
        socketChanged.config.environment.etc."snix-lower-store/store-url".text;

    "6: the socket removes its old path when it stops" = lib.hasInfix "RemoveOnStop=true" (
      unitText secondStore "snix-lower-store.socket"
    );
    "6: system store: a socket change reaches nix-daemon and its store URL" =
      unitText systemStore "nix-daemon.service" != unitText systemStoreSocketChanged "nix-daemon.service"
      &&
        unitText systemStore "snix-lower-store-nix-daemon-env.service"
        != unitText systemStoreSocketChanged "snix-lower-store-nix-daemon-env.service"
      && lib.hasInfix "unix%3A///run/lower-alt.sock" systemStoreSocketChanged.config.services.snix-lower-store.storeUrl;

    "7: the import is part of the lower mount" =
      sec.systemd.services.snix-lower-store-import.partOf == [ "var-lib-snix\\x2doverlay-lower.mount" ];
    "7: the import drops an index of another lower" =
      lib.length sec.systemd.services.snix-lower-store-import.serviceConfig.ExecStartPre == 2;

    "7: the fingerprint is read from the mounted lower, not from lower.device" =
      let
        t = unitText systemStore "snix-lower-store-import.service";
      in
      # A device change alone (it takes effect at the next boot) does not
      # change the import: nothing can record the new device while the old
      # image is mounted.
      t == unitText systemStoreOtherDevice "snix-lower-store-import.service"
      && !(lib.hasInfix device t)
      && lib.hasInfix "-snix-lower-store-drop-stale-index" t;

    "7: second store: a device change changes the import (restarted on switch)" =
      unitText secondStore "snix-lower-store-import.service"
      != unitText secondStoreOtherDevice "snix-lower-store-import.service";

    "8: the socket requires the overlay mount" =
      lib.hasInfix "RequiresMountsFor=/var/lib/snix-overlay/nix/store" (
        unitText secondStore "snix-lower-store.socket"
      );

    "9: the module's own units, not the package's" =
      !(lib.elem sec.services.snix-lower-store.package sec.systemd.packages)
      &&
        lib.all
          (
            u:
            let
              t = unitText secondStore u;
            in
            !(lib.hasInfix "/srv/lower" t) && !(lib.hasInfix "/etc/snix-lower-store/env" t)
          )
          [
            "snix-lower-store.service"
            "snix-lower-store.socket"
            "snix-lower-store-import.service"
          ];
    "9: environmentFile is read by the daemon" = lib.hasInfix "EnvironmentFile=/run/secrets/snix.env" (
      unitText secondStore "snix-lower-store.service"
    );
    "9: daemon environment" =
      let
        env = sec.systemd.services.snix-lower-store.environment;
      in
      env.SNIX_LOWER_STORE_LOWER_DIR == "/var/lib/snix-overlay/lower/nix/store"
      && env.SNIX_LOWER_STORE_LOG_LEVEL == "debug"
      && env.SNIX_LOWER_STORE_IDLE_EXIT_AFTER == "10m";
    "9: extraArgs in ExecStart" =
      sec.systemd.services.snix-lower-store.serviceConfig.ExecStart
      == "${exe} serve \"--max-list\" \"1000\"";

    "10: configureNix with the second store is refused" =
      refusedWith "configureNix = true with placement = \"second-store\""
        (eval {
          services.snix-lower-store = {
            enable = true;
            lower.device = device;
            configureNix = true;
          };
        });
    "10: configureNix without Nix is refused" =
      refusedWith "configureNix needs nix.enable = true"
        (eval {
          nix.enable = false;
          boot.initrd.systemd.enable = true;
          services.snix-lower-store = {
            enable = true;
            placement = "system-store";
            lower.device = device;
            registrations = [ "/nix/.snix-lower/registration" ];
          };
        });
    "10: the old name nix.enable still reaches configureNix" =
      (eval {
        imports = [
          # The old option path, spelt out so that it reads as what it is.
          (lib.setAttrByPath [
            "services"
            "snix-lower-store"
            "nix"
            "enable"
          ] true)
        ];
        services.snix-lower-store = {
          enable = true;
          lower.device = device;
        };
      }).config.services.snix-lower-store.configureNix;
    "10: clients use the daemon through nix.conf, not NIX_CONFIG" =
      sys.nix.settings.store == "daemon" && sys.environment.variables.NIX_CONFIG == "show-trace = true";

    "review 2: the import does not Require the module's own (nofail) lower mount" =
      !(lib.hasInfix "RequiresMountsFor=" (unitText secondStore "snix-lower-store-import.service"))
      && lib.hasInfix "Wants=var-lib-snix\\x2doverlay-lower.mount" (
        unitText secondStore "snix-lower-store-import.service"
      );
    "review 2: with the user's own lower mount, the import waits for it" =
      lib.hasInfix "RequiresMountsFor=/srv/lower/nix/store" (
        unitText ownLower "snix-lower-store-import.service"
      )
      && failedAssertions ownLower == [ ];
    "review 3: system store: import, socket and daemon wait for the lower (skipped before the reboot)" =
      lib.all (u: lib.hasInfix "ConditionPathIsMountPoint=/nix/.snix-lower" (unitText systemStore u))
        [
          "snix-lower-store-import.service"
          "snix-lower-store.socket"
          "snix-lower-store.service"
        ];
    "review 3: second store: no condition (a missing lower is a failure that says why)" =
      !(lib.hasInfix "ConditionPathIsMountPoint" (
        unitText secondStore "snix-lower-store-import.service"
      ));
    "review 5: the lower image is not fsck'd" =
      sec.fileSystems."/var/lib/snix-overlay/lower".noCheck
      && lib.hasInfix "/var/lib/snix-overlay/lower erofs ro,x-systemd.device-timeout=90s,nofail 0 0" sec.environment.etc.fstab.text;
    "review 9: system store: the lower's file system through supportedFilesystems" =
      sys.boot.initrd.supportedFilesystems.erofs
      && lib.elem "overlay" sys.boot.initrd.availableKernelModules
      # nixpkgs' erofs module adds the kernel module.
      && lib.elem "erofs" sys.boot.initrd.availableKernelModules;
    "review 9: system store: a lower fsType the initrd cannot get is refused" =
      refusedWith "use one of erofs, squashfs, ext4"
        (eval {
          boot.initrd.systemd.enable = true;
          services.snix-lower-store = {
            enable = true;
            placement = "system-store";
            lower.device = "lowertag";
            lower.fsType = "virtiofs";
            registrations = [ "/nix/.snix-lower/registration" ];
          };
        });
    "review 10: environmentFile as a Nix path value is refused" =
      !(builtins.tryEval
        (eval {
          services.snix-lower-store = {
            enable = true;
            lower.device = device;
            environmentFile = ./module-eval.nix;
          };
        }).config.services.snix-lower-store.environmentFile
      ).success;
    "review 10: second store without a root reaches its assertion" =
      refusedWith "overlay.root = null with placement = \"second-store\""
        (eval {
          services.snix-lower-store = {
            enable = true;
            lower.device = device;
            overlay.root = null;
          };
        });

    "second store: URL in /etc" =
      sec.environment.etc."snix-lower-store/store-url".text
      == "local-overlay://?root=/var/lib/snix-overlay&lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/var/lib/snix-overlay/lower/nix/store&upper-layer=/var/lib/snix-overlay/upper&check-mount=true\n";
    "system store: storeUrl is the CLI's URL" =
      sys.services.snix-lower-store.storeUrl
      == "local-overlay://?lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/nix/.snix-lower/nix/store&upper-layer=/nix/.snix-rw/upper&check-mount=true";
    "second store: no assertion fails" = failedAssertions secondStore == [ ];
    "system store: no assertion fails" = failedAssertions systemStore == [ ];
    "second store: evaluates to a system" = lib.hasSuffix ".drv" sec.system.build.toplevel.drvPath;
    "system store: evaluates to a system" = lib.hasSuffix ".drv" sys.system.build.toplevel.drvPath;

    "14: image index: no import unit, a check unit in front of the socket" =
      !(img.systemd.services ? snix-lower-store-import)
      && img.systemd.services ? snix-lower-store-check
      && img.systemd.sockets.snix-lower-store.requires == [ "snix-lower-store-check.service" ];
    "14: image index: serve --index <image root>/.snix-lower-store/index, no state directory" =
      img.systemd.services.snix-lower-store.serviceConfig.ExecStart
      == "${exe} serve \"--index\" \"/var/lib/snix-overlay/lower/.snix-lower-store/index\" \"--image-check\" \"sample\""
      && !(img.systemd.services.snix-lower-store.serviceConfig ? StateDirectory)
      && img.services.snix-lower-store.lower.storeDir == "/var/lib/snix-overlay/lower/nix/store";
    "14: image index: no assertion fails, evaluates to a system" =
      failedAssertions imageIndex == [ ] && lib.hasSuffix ".drv" img.system.build.toplevel.drvPath;
    "14: image index with registrations is refused" =
      refusedWith "lower.index = \"image\" serves the index inside the image"
        (eval {
          services.snix-lower-store = {
            enable = true;
            lower.device = device;
            lower.index = "image";
            registrations = [ "/var/lib/snix-overlay/lower/registration" ];
          };
        });
    "14: mkLowerImage evaluates with nixpkgs' closureInfo and erofs-utils" =
      lib.hasSuffix ".drv" lowerImage.drvPath
      && lib.hasSuffix ".drv" lowerImage.closureInfo.drvPath
      && lib.hasSuffix ".erofs" lowerImage.name;
    "14: the package's mkLowerImage (the overlay's) builds the directory form" =
      lib.hasSuffix ".drv"
        (self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store.mkLowerImage {
          rootPaths = [ pkgs.hello ];
          format = "directory";
        }).drvPath;

    "refused: overlay.mountPoint elsewhere than <root>/nix/store" =
      refusedWith "overlay.mountPoint"
        (eval {
          services.snix-lower-store = {
            enable = true;
            lower.device = device;
            overlay.root = "/srv/o";
            overlay.mountPoint = "/srv/o/store";
          };
        });
    "refused: stateDir outside /var/lib" = refusedWith "stateDir" (eval {
      services.snix-lower-store = {
        enable = true;
        lower.device = device;
        stateDir = "/srv/index";
      };
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
