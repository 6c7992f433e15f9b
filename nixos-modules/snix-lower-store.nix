{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.snix-lower-store;

  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionalAttrs
    optionals
    types
    ;

  urlLib = import ./store-url.nix;

  exe = lib.getExe' cfg.package "snix-lower-store";

  # The merged store replaces the system's /nix/store (mounted in the initrd),
  # or is a second store under its own root next to the system's.
  atSystemStore = cfg.overlay.root == null;

  hasLowerMount = cfg.lower.device != null;
  lowerUnit = "${utils.escapeSystemdPath cfg.lower.mountPoint}.mount";
  overlayUnit = "${utils.escapeSystemdPath cfg.overlay.mountPoint}.mount";
  lowerUnits = optional hasLowerMount lowerUnit;

  isUnder = parent: path: path == parent || lib.hasPrefix "${lib.removeSuffix "/" parent}/" path;
  isAbsolute = path: lib.hasPrefix "/" path;

  stateDirectoryName = lib.removePrefix "/var/lib/" cfg.stateDir;

  closureRegistration = pkgs.closureInfo { rootPaths = cfg.closures; };
  registrationFiles =
    map toString cfg.registrations
    ++ optional (cfg.closures != [ ]) "${closureRegistration}/registration";

  storeUrl = urlLib.storeUrl {
    socket = cfg.socket.path;
    lowerDir = cfg.lower.storeDir;
    upperLayer = cfg.overlay.upperDir;
    state = cfg.overlay.state;
    root = cfg.overlay.root;
  };

  commonEnvironment = {
    SNIX_LOWER_STORE_LOWER_DIR = cfg.lower.storeDir;
    SNIX_LOWER_STORE_STATE_DIR = cfg.stateDir;
    SNIX_LOWER_STORE_STORE_DIR = "/nix/store";
    SNIX_LOWER_STORE_LOG_LEVEL = cfg.logLevel;
    SNIX_LOWER_STORE_LOG_TARGET = "auto";
  };

  # Fails with one clear line when the lower store is not there, so that a
  # missing device ends in a failed unit that says why.
  checkLower = pkgs.writeShellScript "snix-lower-store-check-lower" ''
    set -eu
    ${lib.optionalString hasLowerMount ''
      if ! ${pkgs.util-linux}/bin/mountpoint -q ${lib.escapeShellArg cfg.lower.mountPoint}; then
        echo ${
          lib.escapeShellArg "snix-lower-store: lower store not mounted: ${cfg.lower.mountPoint} (device ${cfg.lower.device}, type ${cfg.lower.fsType}); see systemctl status ${lowerUnit}"
        } >&2
        exit 1
      fi
    ''}
    if [ ! -d ${lib.escapeShellArg cfg.lower.storeDir} ]; then
      echo ${
        lib.escapeShellArg "snix-lower-store: lower store directory missing: ${cfg.lower.storeDir} (services.snix-lower-store.lower.storeDir)"
      } >&2
      exit 1
    fi
  '';

  # Paths the initrd must resolve exactly as the booted system will, so that
  # the overlay's lowerdir=/upperdir= strings (compared by Nix's check-mount)
  # are the final paths and not /sysroot/... ones.
  initrdLinks = [
    (if hasLowerMount then cfg.lower.mountPoint else cfg.lower.storeDir)
    cfg.overlay.upperDir
    cfg.overlay.workDir
  ];

  sandbox = {
    ProtectSystem = "strict";
    ProtectHome = "read-only";
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateNetwork = true;
    RestrictAddressFamilies = "AF_UNIX";
    NoNewPrivileges = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectControlGroups = true;
    RestrictNamespaces = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
  };
in
{
  options.services.snix-lower-store = {
    enable = mkEnableOption "snix-lower-store, a read-only nix-daemon serving the lower layer of a local-overlay Nix store";

    package = mkPackageOption pkgs "snix-lower-store" { };

    lower = {
      device = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/dev/disk/by-label/lower-store";
        description = ''
          What holds the lower store, mounted read-only at
          {option}`services.snix-lower-store.lower.mountPoint`: a block device
          with an erofs or squashfs image, a virtiofs tag, an NFS export
          (`server:/export`), or a directory to bind (with
          {option}`services.snix-lower-store.lower.fsType` `"none"` and
          `"bind"` in {option}`services.snix-lower-store.lower.options`).

          `null` declares no mount: the lower store directory is already there.
        '';
      };

      fsType = mkOption {
        type = types.str;
        default = "erofs";
        example = "squashfs";
        description = ''
          File system type of {option}`services.snix-lower-store.lower.device`:
          `erofs`, `squashfs`, `virtiofs`, `nfs`, or `none` for a bind mount.
        '';
      };

      options = mkOption {
        type = types.listOf types.str;
        default = [ "ro" ];
        example = [
          "bind"
          "ro"
        ];
        description = "Mount options of the lower store.";
      };

      deviceTimeout = mkOption {
        type = types.str;
        default = "90s";
        example = "10s";
        description = ''
          How long to wait for a lower device under /dev to appear before the
          mount fails (`x-systemd.device-timeout=`).
        '';
      };

      mountPoint = mkOption {
        type = types.str;
        default =
          if cfg.overlay.root == null then "/nix/.snix-lower" else "${cfg.overlay.root}/lower";
        defaultText = literalExpression ''
          if config.services.snix-lower-store.overlay.root == null
          then "/nix/.snix-lower"
          else "''${config.services.snix-lower-store.overlay.root}/lower"
        '';
        example = "/srv/lower";
        description = "Where the lower store's file system is mounted.";
      };

      storeDir = mkOption {
        type = types.str;
        default = "${cfg.lower.mountPoint}/nix/store";
        defaultText = literalExpression ''"''${config.services.snix-lower-store.lower.mountPoint}/nix/store"'';
        example = "/srv/lower";
        description = ''
          The physical directory holding the lower store objects: the
          overlay's `lowerdir=` and the `real` of the lower store URL. Set it
          to the mount point itself for an image that has the store paths at
          its top, as nixpkgs' `make-squashfs.nix` builds them.
        '';
      };
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/snix-lower-store";
      example = "/var/lib/snix-lower-store-ci";
      description = ''
        Directory of the daemon's index. It is the services'
        `StateDirectory=` (owned by their `DynamicUser=`), so it must lie
        under /var/lib.
      '';
    };

    registrations = mkOption {
      type = types.listOf types.path;
      default = [ ];
      example = [ "/srv/lower/registration" ];
      description = ''
        Registration files (`nix-store --dump-db` output, or `closureInfo`'s
        `registration`) describing the paths of the lower store. They are
        imported into the index by `snix-lower-store-import.service` before the
        socket starts, at every boot and every switch that changes them;
        importing paths already indexed changes nothing. Give paths as
        strings to keep them out of the system closure.
      '';
    };

    closures = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = literalExpression "[ pkgs.hello ]";
      description = ''
        Store paths whose closure is in the lower store; the registration of
        their `closureInfo` is imported like
        {option}`services.snix-lower-store.registrations`. These paths become
        part of the system closure, so this fits a lower image built from the
        same configuration (as netboot images are).
      '';
    };

    socket = {
      path = mkOption {
        type = types.str;
        default = "/run/snix-lower-store/socket";
        example = "/run/lower-store.sock";
        description = "Path of the listening socket (the lower store URL is `unix://` this path).";
      };

      mode = mkOption {
        type = types.strMatching "0?[0-7]{3}";
        default = "0666";
        example = "0660";
        description = "Permissions of the socket.";
      };

      group = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "nixbld";
        description = "Group owning the socket; `null` leaves it to root.";
      };
    };

    overlay = {
      root = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/snix-overlay";
        description = ''
          `null`: the merged store is the system's /nix/store, mounted in the
          initrd (needs `boot.initrd.systemd.enable`), with the lower image
          holding what the system needs to boot, as netboot images do.

          A directory: a second store (Nix's `root`), merged at
          `<root>/nix/store`, that leaves the system store alone. Use it with
          `nix --store "$(cat /etc/snix-lower-store/store-url)"`.
        '';
      };

      mountPoint = mkOption {
        type = types.str;
        default = if cfg.overlay.root == null then "/nix/store" else "${cfg.overlay.root}/nix/store";
        defaultText = literalExpression ''
          if config.services.snix-lower-store.overlay.root == null
          then "/nix/store"
          else "''${config.services.snix-lower-store.overlay.root}/nix/store"
        '';
        example = "/var/lib/snix-overlay/nix/store";
        description = ''
          Where the merged store is mounted. Nix looks for it at
          `<root>/nix/store`, so it can only be that path.
        '';
      };

      upperDir = mkOption {
        type = types.str;
        default = if cfg.overlay.root == null then "/nix/.snix-rw/upper" else "${cfg.overlay.root}/upper";
        defaultText = literalExpression ''
          if config.services.snix-lower-store.overlay.root == null
          then "/nix/.snix-rw/upper"
          else "''${config.services.snix-lower-store.overlay.root}/upper"
        '';
        example = "/var/lib/snix-overlay/upper";
        description = "The overlay's `upperdir=`, where new store paths land (Nix's `upper-layer`).";
      };

      workDir = mkOption {
        type = types.str;
        default = if cfg.overlay.root == null then "/nix/.snix-rw/work" else "${cfg.overlay.root}/work";
        defaultText = literalExpression ''
          if config.services.snix-lower-store.overlay.root == null
          then "/nix/.snix-rw/work"
          else "''${config.services.snix-lower-store.overlay.root}/work"
        '';
        example = "/var/lib/snix-overlay/work";
        description = "The overlay's `workdir=`, on the same file system as the upper directory.";
      };

      state = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/snix-overlay/state";
        description = ''
          Nix's `state` for the merged store (its database); `null` for Nix's
          default, `<root>/nix/var/nix`.
        '';
      };
    };

    nix.enable = mkEnableOption ''
      the merged store as Nix's store: `nix.settings.store` is set to
      {option}`services.snix-lower-store.storeUrl`, nix-daemon requires the
      socket and the overlay mount, and login shells get
      `NIX_CONFIG = "store = daemon"` so that users who cannot write the
      store go through nix-daemon
    '';

    trustedUsers = mkOption {
      type = types.listOf types.str;
      default = [ "root" ];
      example = [
        "root"
        "@wheel"
      ];
      description = "Users (and @groups) the daemon reports as trusted; the store is read-only either way.";
    };

    idleExitAfter = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10m";
      description = ''
        Stop the daemon after this long without a connection; the socket
        starts it again on the next one. `null` keeps it running.
      '';
    };

    logLevel = mkOption {
      type = types.enum [
        "error"
        "warn"
        "info"
        "debug"
        "trace"
      ];
      default = "info";
      example = "debug";
      description = "Log level of the daemon and of the import.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--max-list"
        "100000"
      ];
      description = "Extra arguments to `snix-lower-store serve`.";
    };

    storeUrl = mkOption {
      type = types.str;
      readOnly = true;
      default = storeUrl;
      defaultText = literalExpression ''"local-overlay://?lower-store=unix%3A//…&upper-layer=…&check-mount=true"'';
      description = ''
        The `local-overlay://` URL of the merged store, percent-encoded as
        `snix-lower-store store-url` prints it. Also in
        /etc/snix-lower-store/store-url.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = isUnder "/var/lib" cfg.stateDir && cfg.stateDir != "/var/lib";
          message = "services.snix-lower-store.stateDir = \"${cfg.stateDir}\": it must be a directory under /var/lib (the services' StateDirectory=, owned by their DynamicUser=).";
        }
        {
          assertion = atSystemStore -> config.boot.initrd.systemd.enable;
          message = "services.snix-lower-store: with overlay.root = null the merged store replaces /nix/store and is mounted in the initrd; that needs boot.initrd.systemd.enable = true (the scripted initrd would mount it with /mnt-root-prefixed lowerdir=/upperdir= strings, which Nix's check-mount rejects). Set boot.initrd.systemd.enable = true, or set overlay.root for a second store.";
        }
        {
          assertion =
            cfg.overlay.root == null || (isAbsolute cfg.overlay.root && lib.removeSuffix "/" cfg.overlay.root != "");
          message = "services.snix-lower-store.overlay.root = \"${toString cfg.overlay.root}\": give an absolute directory other than /, or null for the system store.";
        }
        {
          assertion =
            cfg.overlay.mountPoint
            == (if cfg.overlay.root == null then "/nix/store" else "${cfg.overlay.root}/nix/store");
          message = "services.snix-lower-store.overlay.mountPoint = \"${cfg.overlay.mountPoint}\": Nix looks for the merged store at <overlay.root>/nix/store (/nix/store without a root), so it must be that path.";
        }
        {
          assertion = lib.all isAbsolute [
            cfg.lower.mountPoint
            cfg.lower.storeDir
            cfg.overlay.upperDir
            cfg.overlay.workDir
            cfg.socket.path
          ];
          message = "services.snix-lower-store: lower.mountPoint, lower.storeDir, overlay.upperDir, overlay.workDir and socket.path must be absolute paths.";
        }
        {
          assertion = !hasLowerMount || isUnder cfg.lower.mountPoint cfg.lower.storeDir;
          message = "services.snix-lower-store.lower.storeDir = \"${cfg.lower.storeDir}\" is not inside lower.mountPoint = \"${cfg.lower.mountPoint}\": the store objects must come from the lower mount.";
        }
        {
          assertion = cfg.lower.mountPoint != "/" && !(isUnder cfg.overlay.mountPoint cfg.lower.mountPoint);
          message = "services.snix-lower-store.lower.mountPoint = \"${cfg.lower.mountPoint}\": the lower store cannot be mounted at / or inside the merged store (${cfg.overlay.mountPoint}).";
        }
        {
          assertion =
            !(isUnder cfg.overlay.mountPoint cfg.lower.storeDir) && !(isUnder cfg.lower.storeDir cfg.overlay.mountPoint);
          message = "services.snix-lower-store: lower.storeDir = \"${cfg.lower.storeDir}\" and the merged store ${cfg.overlay.mountPoint} overlap; the lower layer must be a separate directory.";
        }
        {
          assertion = lib.all (dir: !(isUnder cfg.overlay.mountPoint dir) && !(isUnder cfg.lower.mountPoint dir)) [
            cfg.overlay.upperDir
            cfg.overlay.workDir
          ];
          message = "services.snix-lower-store: overlay.upperDir and overlay.workDir must lie outside the merged store (${cfg.overlay.mountPoint}) and the read-only lower mount (${cfg.lower.mountPoint}).";
        }
        {
          assertion =
            cfg.overlay.upperDir != cfg.overlay.workDir
            && !(isUnder cfg.overlay.upperDir cfg.overlay.workDir)
            && !(isUnder cfg.overlay.workDir cfg.overlay.upperDir);
          message = "services.snix-lower-store: overlay.upperDir and overlay.workDir must be two separate directories (neither inside the other).";
        }
        {
          assertion = !hasLowerMount || cfg.lower.fsType != "overlay";
          message = "services.snix-lower-store.lower.fsType = \"overlay\": the lower store must be a plain file system (erofs, squashfs, virtiofs, nfs, or a bind with fsType \"none\").";
        }
        {
          assertion = atSystemStore -> lib.all (p: !(isUnder "/nix/store" p)) initrdLinks;
          message = "services.snix-lower-store: with the merged store at /nix/store, lower.mountPoint, overlay.upperDir and overlay.workDir must lie outside /nix/store.";
        }
      ];

      warnings = optional (cfg.nix.enable && !atSystemStore) "services.snix-lower-store.nix.enable with overlay.root = \"${cfg.overlay.root}\" makes the second store Nix's default store: the system's own /nix/store is then no longer what nix-daemon and nixos-rebuild use.";

      systemd.packages = [ cfg.package ];
      environment.systemPackages = [ cfg.package ];

      nix.settings.experimental-features = [ "local-overlay-store" ];

      environment.etc."snix-lower-store/store-url".text = storeUrl + "\n";

      fileSystems = mkMerge [
        (mkIf hasLowerMount {
          ${cfg.lower.mountPoint} = {
            device = cfg.lower.device;
            fsType = cfg.lower.fsType;
            options =
              cfg.lower.options
              ++ optional (lib.hasPrefix "/dev/" cfg.lower.device) "x-systemd.device-timeout=${cfg.lower.deviceTimeout}"
              # A second store must never stop the boot: its mounts are only wanted.
              ++ optional (!atSystemStore) "nofail";
            neededForBoot = atSystemStore;
          };
        })
        {
          ${cfg.overlay.mountPoint} = {
            device = "overlay";
            fsType = "overlay";
            options = [
              "lowerdir=${cfg.lower.storeDir}"
              "upperdir=${cfg.overlay.upperDir}"
              "workdir=${cfg.overlay.workDir}"
            ]
            ++ optional (!atSystemStore) "nofail";
            # Requires= and After= on the lower mount and the upper file system.
            depends = [
              cfg.lower.storeDir
              cfg.overlay.upperDir
              cfg.overlay.workDir
            ];
            neededForBoot = atSystemStore;
          };
        }
      ];

      # Checks the lower store and imports the registrations, as the daemon's
      # DynamicUser, before the socket accepts anything.
      systemd.services.snix-lower-store-import = {
        description = "snix-lower-store: check the lower store and import its registrations";
        documentation = [ "https://github.com/snix-lower-store/snix-lower-store#nixos" ];
        wants = lowerUnits;
        after = lowerUnits;
        before = [
          "snix-lower-store.socket"
          "snix-lower-store.service"
        ];
        environment = commonEnvironment;
        serviceConfig = sandbox // {
          Type = "oneshot";
          RemainAfterExit = true;
          DynamicUser = true;
          # The same name as the daemon's: the same dynamic UID owns the index.
          User = "snix-lower-store";
          StateDirectory = stateDirectoryName;
          StateDirectoryMode = "0700";
          UMask = "0077";
          ReadOnlyPaths = [ "-${cfg.lower.storeDir}" ];
          ExecStartPre = "${checkLower}";
          ExecStart =
            if registrationFiles == [ ] then
              [ "${pkgs.coreutils}/bin/true" ]
            else
              map (f: "${exe} import --registration ${utils.escapeSystemdExecArg f}") registrationFiles;
        };
      };

      # Drop-ins for the package's snix-lower-store.service.
      systemd.services.snix-lower-store = {
        requires = [ "snix-lower-store-import.service" ];
        after = [ "snix-lower-store-import.service" ] ++ lowerUnits;
        bindsTo = lowerUnits;
        unitConfig.RequiresMountsFor = [ cfg.lower.storeDir ];
        environment =
          commonEnvironment
          // {
            SNIX_LOWER_STORE_TRUSTED_USERS = lib.concatStringsSep "," cfg.trustedUsers;
          }
          // optionalAttrs (cfg.idleExitAfter != null) {
            SNIX_LOWER_STORE_IDLE_EXIT_AFTER = cfg.idleExitAfter;
          };
        serviceConfig = {
          StateDirectory = [
            ""
            stateDirectoryName
          ];
          ReadOnlyPaths = [ "-${cfg.lower.storeDir}" ];
          ExecStart = mkIf (cfg.extraArgs != [ ]) [
            ""
            "${exe} serve ${utils.escapeSystemdExecArgs cfg.extraArgs}"
          ];
        };
      };

      # Drop-ins for the package's snix-lower-store.socket. It waits for the
      # import (so it leaves sockets.target, which comes before the import's
      # basic.target) and goes when the lower mount goes.
      systemd.sockets.snix-lower-store = {
        wantedBy = [ "multi-user.target" ];
        requires = [ "snix-lower-store-import.service" ];
        after = [
          "sysinit.target"
          "snix-lower-store-import.service"
        ]
        ++ lowerUnits;
        bindsTo = lowerUnits;
        before = [ "shutdown.target" ];
        conflicts = [ "shutdown.target" ];
        unitConfig.DefaultDependencies = false;
        socketConfig = {
          ListenStream = [
            ""
            cfg.socket.path
          ];
          SocketMode = cfg.socket.mode;
          SocketGroup = if cfg.socket.group == null then "root" else cfg.socket.group;
        };
      };
    }

    (mkIf (!atSystemStore) {
      # Upper and work directories, made before the overlay is mounted.
      systemd.services.snix-lower-store-overlay-dirs = {
        description = "snix-lower-store: create the overlay's upper and work directories";
        requiredBy = [ overlayUnit ];
        before = [ overlayUnit ];
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = [
            cfg.overlay.upperDir
            cfg.overlay.workDir
          ];
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${pkgs.coreutils}/bin/mkdir -p -m 0755 ${
            utils.escapeSystemdExecArgs [
              cfg.overlay.upperDir
              cfg.overlay.workDir
            ]
          }";
        };
      };
    })

    (mkIf atSystemStore {
      boot.initrd.availableKernelModules = [ "overlay" ];
      boot.initrd.systemd.storePaths = [
        "${pkgs.coreutils}/bin/mkdir"
        "${pkgs.coreutils}/bin/ln"
      ];

      # In the initrd the final root is at /sysroot. Link the final paths to
      # it so that the overlay is mounted with lowerdir=/upperdir= strings
      # that stay true after switch-root.
      boot.initrd.systemd.services.snix-lower-store-initrd-paths = {
        description = "snix-lower-store: final overlay paths in the initrd";
        requiredBy = [ "sysroot-nix-store.mount" ];
        before = [ "sysroot-nix-store.mount" ];
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = [
            "/sysroot${cfg.overlay.upperDir}"
            "/sysroot${cfg.overlay.workDir}"
          ];
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = [
            "${pkgs.coreutils}/bin/mkdir -p -m 0755 ${
              utils.escapeSystemdExecArgs [
                "/sysroot${cfg.overlay.upperDir}"
                "/sysroot${cfg.overlay.workDir}"
              ]
            }"
          ]
          ++ map (p: "${pkgs.coreutils}/bin/mkdir -p ${utils.escapeSystemdExecArg (dirOf p)}") initrdLinks
          ++ map (
            p: "${pkgs.coreutils}/bin/ln -sfn ${utils.escapeSystemdExecArgs [ "/sysroot${p}" p ]}"
          ) initrdLinks;
        };
      };
    })

    (mkIf cfg.nix.enable {
      nix.settings.store = storeUrl;

      environment.variables.NIX_CONFIG = lib.mkDefault "store = daemon";

      systemd.services.nix-daemon = {
        requires = [
          "snix-lower-store.socket"
          overlayUnit
        ];
        after = [
          "snix-lower-store.socket"
          overlayUnit
        ];
      };
    })
  ]);

  meta.maintainers = [ ];
}
