# Stand-ins for the parts of NixOS the module relies on, for evaluating it
# with nixpkgs' real `lib` and real systemd unit types outside a nixpkgs
# checkout (tests/nixos-local/run).
#
# Invariants:
# - `systemd.*` and `boot.initrd.systemd.*` use the types of nixpkgs'
#   nixos/lib/systemd-types.nix and render units with systemd-lib.nix's
#   serviceToUnit / socketToUnit / targetToUnit / mountToUnit, as systemd.nix
#   does;
# - `fileSystems` has the option types of nixos/modules/tasks/filesystems.nix
#   (plus stage-1.nix's `neededForBoot`), including the options it adds to
#   each entry (`x-initrd.mount`, `x-systemd.requires-mounts-for=`), and
#   `fstabText` writes its /etc/fstab lines the same way;
# - `nix.settings` is typed as nixos/modules/config/nix.nix types it
#   (a freeform `attrsOf (either confAtom (listOf confAtom))`);
# - `vmModule` reproduces qemu-vm.nix's
#   `fileSystems = mkIf (cfg.fileSystems != { }) (mkVMOverride cfg.fileSystems)`.
# Everything else (users, environment.etc, ...) is declared loosely: the
# module may set it, nothing here checks it beyond its shape.
# Packages are placeholders with fake store paths; scripts made with
# writeShellScript are real files (builtins.toFile) so they can run.
{ lib, nixosLib }:

let
  inherit (lib) mkOption types;

  fakeHash = "00000000000000000000000000000000";

  mkPkg =
    pname: version: extra:
    let
      self = {
        type = "derivation";
        inherit pname version;
        name = "${pname}-${version}";
        outPath = "/nix/store/${fakeHash}-${pname}-${version}";
        drvPath = "/nix/store/${fakeHash}-${pname}-${version}.drv";
        outputs = [ "out" ];
        outputName = "out";
        out = self;
        meta.mainProgram = pname;
        override = _: self;
        # Keeps what the override adds to passthru (as mkDerivation does).
        overrideAttrs = f: self // ((f self).passthru or { });
      }
      // extra;
    in
    self;

  mkCaptured =
    name: outPath: captured:
    let
      self = {
        type = "derivation";
        inherit name outPath;
        drvPath = "/nix/store/${fakeHash}-${name}.drv";
        outputs = [ "out" ];
        outputName = "out";
        out = self;
        meta.mainProgram = captured.mainProgram or name;
        passthru.captured = captured;
        overrideAttrs = _: self;
      }
      // captured;
    in
    self;

  captured = name: args: mkCaptured name "/nix/store/${fakeHash}-${name}" args;

  # A real file in the (chroot's) store, so that the booted units can run it
  # (made executable when copied into a booted root).
  script =
    name: text:
    mkCaptured name (builtins.toFile name "#!/bin/bash\n${text}") {
      inherit text;
      isScript = true;
    };

  # The stand-in package set; `packageOverrides` for the flake's own package.
  mkPkgs =
    system:
    lib.fix (
      self:
      {
        inherit lib;
        stdenv.hostPlatform = {
          inherit system;
          isLinux = true;
        };
        stdenv.buildPlatform = self.stdenv.hostPlatform;
        callPackage = lib.callPackageWith self;
        rustPlatform.buildRustPackage =
          argsOrFn:
          let
            args = if lib.isFunction argsOrFn then argsOrFn args else argsOrFn;
          in
          mkPkg args.pname args.version { buildRustPackageArgs = args; };
        systemd = mkPkg "systemd" "stand-in" { };
        coreutils = mkPkg "coreutils" "stand-in" { };
        util-linux = mkPkg "util-linux" "stand-in" { };
        findutils = mkPkg "findutils" "stand-in" { };
        gnugrep = mkPkg "gnugrep" "stand-in" { };
        gnused = mkPkg "gnused" "stand-in" { };
        bash = mkPkg "bash" "stand-in" { };
        runtimeShell = "${self.bash}/bin/bash";
        jq = mkPkg "jq" "stand-in" { };
        busybox = mkPkg "busybox" "stand-in" { };
        erofs-utils = mkPkg "erofs-utils" "stand-in" { };
        squashfsTools = mkPkg "squashfs-tools" "stand-in" { };
        nix = mkPkg "nix" "stand-in" { };
        buildPackages.lndir = mkPkg "lndir" "stand-in" { };
        runCommand = name: env: buildCommand: captured name { inherit env buildCommand; };
        runCommandLocal = self.runCommand;
        # Content-addressed like the real one, so that restartTriggers
        # (X-Restart-Triggers=, a writeText path) follow what they hash.
        writeText = name: text: mkCaptured name (builtins.toFile name text) { inherit text; };
        writeTextFile = args: captured args.name args;
        writeShellScript = script;
        writeScript = script;
        writeShellScriptBin = name: text: captured name { inherit text; };
        writeShellApplication = args: captured args.name args;
        closureInfo = args: captured "closure-info" args;
        testers.runNixOSTest = args: args;
      }
    );

  # nixos/modules/misc/extra-arguments.nix and the systemd.* part of
  # nixos/modules/system/boot/systemd.nix (declarations and `units`).
  systemdModule =
    {
      config,
      pkgs,
      utils,
      ...
    }:
    let
      inherit (utils) systemdUtils;
      sd = systemdUtils.lib;
      st = systemdUtils.types;
      withName = toUnit: def: lib.nameValuePair def.name (toUnit def);
      mountUnits =
        toUnit: mounts:
        lib.listToAttrs (
          map (m: lib.nameValuePair "${utils.escapeSystemdPath m.where}.mount" (toUnit m)) mounts
        );
      unitsOf =
        cfg:
        lib.mapAttrs' (_: withName sd.serviceToUnit) cfg.services
        // lib.mapAttrs' (_: withName sd.socketToUnit) cfg.sockets
        // lib.mapAttrs' (_: withName sd.targetToUnit) cfg.targets
        // mountUnits sd.mountToUnit cfg.mounts;
    in
    {
      options.systemd = {
        package = mkOption {
          type = types.package;
          default = pkgs.systemd;
        };
        enableStrictShellChecks = lib.mkEnableOption "";
        globalEnvironment = mkOption {
          type = with types; attrsOf (nullOr (oneOf [ str path package ]));
          default = { };
        };
        packages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        units = mkOption {
          type = st.units;
          default = { };
        };
        services = mkOption {
          type = st.services;
          default = { };
        };
        sockets = mkOption {
          type = st.sockets;
          default = { };
        };
        targets = mkOption {
          type = st.targets;
          default = { };
        };
        timers = mkOption {
          type = st.timers;
          default = { };
        };
        paths = mkOption {
          type = st.paths;
          default = { };
        };
        mounts = mkOption {
          type = st.mounts;
          default = [ ];
        };
        automounts = mkOption {
          type = st.automounts;
          default = [ ];
        };
        tmpfiles.rules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        tmpfiles.settings = mkOption {
          type = types.attrsOf (types.attrsOf (types.attrsOf (types.attrsOf types.anything)));
          default = { };
        };
      };

      options.boot.initrd = {
        availableKernelModules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        kernelModules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        checkJournalingFS = mkOption {
          type = types.bool;
          default = true;
        };
        supportedFilesystems = mkOption {
          type = types.coercedTo (types.listOf types.str) (l: lib.genAttrs l (_: true)) (
            types.attrsOf types.bool
          );
          default = { };
        };
        systemd = {
          enable = lib.mkEnableOption "systemd in stage 1";
          services = mkOption {
            type = st.initrdServices;
            default = { };
          };
          targets = mkOption {
            type = st.initrdTargets;
            default = { };
          };
          sockets = mkOption {
            type = st.initrdSockets;
            default = { };
          };
          mounts = mkOption {
            type = st.initrdMounts;
            default = [ ];
          };
          storePaths = mkOption {
            type = st.initrdStorePath;
            default = [ ];
          };
          contents = mkOption {
            type = st.initrdContents;
            default = { };
          };
          tmpfiles.settings = mkOption {
            type = types.attrsOf (types.attrsOf (types.attrsOf (types.attrsOf types.anything)));
            default = { };
          };
          units = mkOption {
            type = st.units;
            default = { };
          };
        };
      };

      config = {
        _module.args.utils = import (nixosLib + "/utils.nix") { inherit lib config pkgs; };
        systemd.units = unitsOf config.systemd;
        boot.initrd.systemd.units = unitsOf config.boot.initrd.systemd;
      };
    };

  # nixos/modules/tasks/filesystems.nix's fileSystems type, and stage-1.nix's
  # neededForBoot.
  fileSystemsType =
    config: utils:
    let
      isNonEmpty = s: builtins.match "[ \t\n]*" s == null;
      withCheck =
        desc: t: check:
        types.addCheck t check // { description = "${t.description} (with check: ${desc})"; };
      nonEmptyStr = withCheck "non-empty" types.str isNonEmpty;
      mountPath = withCheck "non-empty without trailing slash" types.str (
        s: isNonEmpty s && builtins.match ".+/" s == null
      );
      escapeFstab = builtins.replaceStrings [ " " "\t" ] [ "\\040" "\\011" ];
      core =
        { name, config, ... }:
        {
          options = {
            enable = lib.mkEnableOption "the filesystem mount" // {
              default = true;
            };
            mountPoint = mkOption {
              type = mountPath;
              default = name;
            };
            stratis.poolUuid = mkOption {
              type = types.uniq (types.nullOr types.str);
              default = null;
            };
            device = mkOption {
              type = types.nullOr nonEmptyStr;
              default = null;
            };
            fsType = mkOption {
              type = nonEmptyStr;
              default = "auto";
            };
            options = mkOption {
              type = types.nonEmptyListOf nonEmptyStr;
              default = [ "defaults" ];
            };
            depends = mkOption {
              type = types.listOf mountPath;
              default = [ ];
            };
          };
          config.device = lib.mkIf (lib.elem config.fsType [
            "proc"
            "sysfs"
            "tmpfs"
            "ramfs"
            "devtmpfs"
            "devpts"
          ]) (lib.mkDefault config.fsType);
        };
      full =
        { config, ... }:
        let
          inInitrd = utils.fsNeededForBoot config;
        in
        {
          options = {
            label = mkOption {
              type = types.nullOr nonEmptyStr;
              default = null;
            };
            autoFormat = mkOption {
              type = types.bool;
              default = false;
            };
            formatOptions = mkOption {
              type = types.unspecified;
              default = null;
              visible = false;
            };
            autoResize = mkOption {
              type = types.bool;
              default = false;
            };
            noCheck = mkOption {
              type = types.bool;
              default = false;
            };
            neededForBoot = mkOption {
              type = types.bool;
              default = false;
            };
          };
          config.device = lib.mkIf (config.label != null) (
            lib.mkDefault "/dev/disk/by-label/${escapeFstab config.label}"
          );
          config.options = lib.mkMerge [
            (lib.mkIf config.autoResize [ "x-systemd.growfs" ])
            (lib.mkIf config.autoFormat [ "x-systemd.makefs" ])
            (lib.mkIf inInitrd [ "x-initrd.mount" ])
            (lib.mkIf (config.depends != [ ] && (inInitrd -> outer.boot.initrd.systemd.enable)) (
              map (d: "x-systemd.requires-mounts-for=${lib.optionalString inInitrd "/sysroot"}${d}") config.depends
            ))
          ];
        };
      outer = config;
    in
    types.attrsOf (
      types.submodule [
        core
        full
      ]
    );

  fileSystemsModule =
    { config, utils, ... }:
    {
      options.fileSystems = mkOption {
        type = fileSystemsType config utils;
        default = { };
        apply = lib.filterAttrs (_: fs: fs.enable);
      };
      options.boot.supportedFilesystems = mkOption {
        type = types.coercedTo (types.listOf types.str) (l: lib.genAttrs l (_: true)) (
          types.attrsOf types.bool
        );
        default = { };
      };
    };

  # /etc/fstab's file system lines, as filesystems.nix writes them
  # (topologically sorted by utils.fsBefore).
  fstabText =
    config: utils:
    let
      escapeFstab = builtins.replaceStrings [ " " "\t" ] [ "\\040" "\\011" ];
      sorted = lib.toposort utils.fsBefore (lib.attrValues config.fileSystems);
      list = sorted.result or (lib.attrValues config.fileSystems);
      noCheckTypes = [
        "none"
        "auto"
        "overlay"
        "iso9660"
        "bindfs"
        "udf"
        "btrfs"
        "zfs"
        "tmpfs"
        "bcachefs"
        "nfs"
        "nfs4"
        "nilfs2"
        "vboxsf"
        "squashfs"
        "glusterfs"
        "apfs"
        "9p"
        "cifs"
        "prl_fs"
        "vmhgfs"
      ]
      ++ lib.optionals (!config.boot.initrd.checkJournalingFS) [
        "ext3"
        "ext4"
        "reiserfs"
        "xfs"
        "jfs"
        "f2fs"
      ];
      skip =
        fs: fs.noCheck || fs.device == "none" || lib.elem fs.fsType noCheckTypes || lib.elem "bind" fs.options;
      line =
        fs:
        lib.concatStringsSep " " [
          (if fs.device != null then escapeFstab fs.device else throw "No device specified for mount point ‘${fs.mountPoint}’.")
          (escapeFstab fs.mountPoint)
          fs.fsType
          (escapeFstab (lib.concatStringsSep "," fs.options))
          "0"
          (
            if skip fs then
              "0"
            else if fs.mountPoint == "/" then
              "1"
            else
              "2"
          )
        ]
        + "\n";
    in
    lib.concatMapStrings line list;

  # nixos/modules/config/nix.nix's nix.settings type; nix-daemon's units as
  # nix-daemon.nix has them (the package's units plus its settings), reduced
  # to what systemd needs to load them.
  nixModule =
    { config, pkgs, ... }:
    let
      confAtom =
        with types;
        nullOr (oneOf [
          bool
          int
          float
          str
          path
          package
        ])
        // {
          description = "Nix config atom (null, bool, int, float, str, path or package)";
        };
    in
    {
      options.nix = {
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        package = mkOption {
          type = types.package;
          default = pkgs.nix;
        };
        extraOptions = mkOption {
          type = types.lines;
          default = "";
        };
        settings = mkOption {
          type = types.submodule {
            freeformType = types.attrsOf (types.either confAtom (types.listOf confAtom));
          };
          default = { };
        };
      };
      config = lib.mkIf config.nix.enable {
        systemd.services.nix-daemon = {
          description = "Nix Daemon";
          unitConfig.RequiresMountsFor = [
            "/nix/store"
            "/nix/var"
          ];
          serviceConfig = {
            ExecStart = "@${pkgs.nix}/bin/nix-daemon nix-daemon --daemon";
            KillMode = "process";
          };
        };
        systemd.sockets.nix-daemon = {
          description = "Nix Daemon Socket";
          wantedBy = [ "sockets.target" ];
          unitConfig.RequiresMountsFor = [ "/nix/store" ];
          socketConfig.ListenStream = "/nix/var/nix/daemon-socket/socket";
        };
      };
    };

  # Everything else a configuration may touch, loosely typed.
  miscModule =
    { ... }:
    let
      loose = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
    in
    {
      options = {
        assertions = mkOption {
          type = types.listOf types.unspecified;
          default = [ ];
        };
        warnings = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        meta = loose;
        environment.etc = mkOption {
          type = types.attrsOf (
            types.submodule (
              { name, ... }:
              {
                options = {
                  enable = mkOption {
                    type = types.bool;
                    default = true;
                  };
                  target = mkOption {
                    type = types.str;
                    default = name;
                  };
                  text = mkOption {
                    type = types.nullOr types.lines;
                    default = null;
                  };
                  source = mkOption {
                    type = types.nullOr (types.either types.path types.package);
                    default = null;
                  };
                  mode = mkOption {
                    type = types.str;
                    default = "symlink";
                  };
                  user = mkOption {
                    type = types.str;
                    default = "+0";
                  };
                  group = mkOption {
                    type = types.str;
                    default = "+0";
                  };
                };
              }
            )
          );
          default = { };
        };
        environment.systemPackages = mkOption {
          type = types.listOf types.package;
          default = [ ];
        };
        environment.variables = mkOption {
          type =
            with types;
            attrsOf (oneOf [
              (listOf (oneOf [
                int
                str
                path
              ]))
              int
              str
              path
            ]);
          default = { };
        };
        environment.sessionVariables = mkOption {
          type = types.attrsOf types.anything;
          default = { };
        };
        users.users = mkOption {
          type = types.attrsOf (types.submodule { freeformType = types.attrsOf types.anything; });
          default = { };
        };
        users.groups = mkOption {
          type = types.attrsOf (types.submodule { freeformType = types.attrsOf types.anything; });
          default = { };
        };
        boot.kernelModules = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        boot.loader = loose;
        boot.postBootCommands = mkOption {
          type = types.lines;
          default = "";
        };
        system.switch = loose;
        networking = loose;
        nixpkgs = loose;
        system.stateVersion = mkOption {
          type = types.str;
          default = "26.05";
        };
        system.build = loose;
        specialisation = mkOption {
          type = types.attrsOf (
            types.submodule {
              options.inheritParentConfig = mkOption {
                type = types.bool;
                default = true;
              };
              options.configuration = mkOption {
                type = types.deferredModule;
                default = { };
              };
            }
          );
          default = { };
        };
      };
    };

  # qemu-vm.nix: test nodes mount what virtualisation.fileSystems says, with
  # mkVMOverride (priority 10) over every other fileSystems definition.
  vmModule =
    { config, utils, ... }:
    {
      options.virtualisation = mkOption {
        type = types.submodule {
          freeformType = types.attrsOf types.anything;
          options.fileSystems = mkOption {
            type = fileSystemsType config utils;
            default = { };
          };
        };
        default = { };
      };
      config.virtualisation.fileSystems = {
        "/" = lib.mkDefault {
          device = "/dev/disk/by-label/nixos";
          fsType = "ext4";
          autoFormat = true;
        };
        "/nix/.ro-store" = lib.mkDefault {
          device = "nix-store";
          fsType = "9p";
          neededForBoot = true;
          options = [
            "trans=virtio"
            "version=9p2000.L"
            "msize=16384"
            "x-systemd.requires=modprobe@9pnet_virtio.service"
            "cache=loose"
          ];
        };
      };
      config.fileSystems = lib.mkIf (config.virtualisation.fileSystems != { }) (
        lib.mkOverride 10 config.virtualisation.fileSystems
      );
    };
in
{
  inherit mkPkgs fstabText fakeHash;
  baseModules = [
    systemdModule
    fileSystemsModule
    nixModule
    miscModule
  ];
  inherit vmModule;
}
