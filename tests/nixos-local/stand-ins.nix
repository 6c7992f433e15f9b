# Stand-ins for the parts of NixOS that ../shared/nixpkgs does not hold, so
# that the module is evaluated with nixpkgs' real `lib`, real systemd unit
# types and nixpkgs' own modules outside a nixpkgs checkout
# (tests/nixos-local/run).
#
# Real (imported from nixpkgs by `baseModules` / `vmModules`):
#   config/nix.nix (nix.settings' type, nix.conf's text and its checks),
#   tasks/filesystems.nix + filesystems/{erofs,squashfs,overlayfs}.nix
#   (the fileSystems type, /etc/fstab, their assertions), misc/assertions.nix,
#   system/boot/systemd/initrd.nix (boot.initrd.systemd.*: its types, its own
#   stage-1 units and the units it renders with generateUnits' helpers),
#   virtualisation/qemu-vm.nix for VM test nodes (every virtualisation.*
#   option, its fileSystems override), minus the two files it imports that
#   are not copied (the qemu-guest profile; disk-size-option.nix, whose two
#   options are declared here as that file declares them).
# Stood in for:
# - `systemd.*` (systemd.nix): the types of nixpkgs'
#   nixos/lib/systemd-types.nix, units rendered with systemd-lib.nix's
#   serviceToUnit / socketToUnit / targetToUnit / mountToUnit, as
#   systemd.nix does;
# - stage-1.nix's options (`neededForBoot`, the boot.initrd.* that
#   initrd.nix reads); etc.nix's environment.etc (text -> source as etc.nix
#   does it); nix-daemon.nix's nix.enable / nix.package;
# - every other option a configuration here sets, declared with the type
#   its nixpkgs module gives it and no freeform type, so a misspelt option
#   (virtualisation.*, boot.loader.*, system.switch.*, users.*,
#   networking.*) fails to evaluate. Nothing turns the module system's
#   checks off.
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
    lib.fix (self: {
      inherit lib;
      stdenv.hostPlatform = {
        inherit system;
        isLinux = true;
        is32bit = false;
        is64bit = true;
        isx86_64 = system == "x86_64-linux";
        isAarch64 = system == "aarch64-linux";
      };
      stdenv.buildPlatform = self.stdenv.hostPlatform;
      callPackage = lib.callPackageWith self;
      rustPlatform.buildRustPackage =
        argsOrFn:
        let
          args = if lib.isFunction argsOrFn then argsOrFn args else argsOrFn;
        in
        mkPkg args.pname args.version {
          buildRustPackageArgs = args;
          inherit (args) src;
        };
      systemd = mkPkg "systemd" "stand-in" {
        inherit (self) kmod util-linux;
        withEfi = true;
      };
      coreutils = mkPkg "coreutils" "stand-in" { };
      util-linux = mkPkg "util-linux" "stand-in" { };
      findutils = mkPkg "findutils" "stand-in" { };
      gnugrep = mkPkg "gnugrep" "stand-in" { };
      gnused = mkPkg "gnused" "stand-in" { };
      bash = mkPkg "bash" "stand-in" { };
      runtimeShell = "${self.bash}/bin/bash";
      jq = mkPkg "jq" "stand-in" { };
      busybox = mkPkg "busybox" "stand-in" { };
      hello = mkPkg "hello" "stand-in" { };
      # What nixpkgs' systemd/initrd.nix names.
      linux = mkPkg "linux" "stand-in" { };
      bashInteractive = mkPkg "bash-interactive" "stand-in" { };
      less = mkPkg "less" "stand-in" { };
      glibc = mkPkg "glibc" "stand-in" { };
      kmod = mkPkg "kmod" "stand-in" { };
      kmod-blacklist-ubuntu = mkPkg "kmod-blacklist-ubuntu" "stand-in" { };
      kmod-debian-aliases = mkPkg "kmod-debian-aliases" "stand-in" { };
      chroot-realpath = mkPkg "chroot-realpath" "stand-in" { };
      systemd-cryptsetup-generator = mkPkg "systemd-cryptsetup-generator" "stand-in" { };
      buildEnv = args: captured args.name args;
      makeInitrdNG = args: captured args.name args;
      makeModulesClosure = args: captured "modules-closure" args;
      erofs-utils = mkPkg "erofs-utils" "stand-in" { };
      dosfstools = mkPkg "dosfstools" "stand-in" { };
      qemu_kvm = mkPkg "qemu" "stand-in" { };
      qemu = self.qemu_kvm;
      OVMF = mkPkg "OVMF" "stand-in" { fd = mkPkg "OVMF-fd" "stand-in" { }; };
      squashfsTools = mkPkg "squashfs-tools" "stand-in" { };
      # A version: nix.nix renders nix.conf by it (isNixAtLeast).
      nix = mkPkg "nix" "2.31.0" { };
      buildPackages.lndir = mkPkg "lndir" "stand-in" { };
      # passthru attributes on the result, as mkDerivation puts them.
      runCommand =
        name: env: buildCommand:
        captured name ({ inherit env buildCommand; } // env.passthru or { });
      runCommandLocal = self.runCommand;
      # Content-addressed like the real one, so that restartTriggers
      # (X-Restart-Triggers=, a writeText path) follow what they hash.
      writeText = name: text: mkCaptured name (builtins.toFile name text) { inherit text; };
      # nix.nix's nix.conf: its text is what eval.nix reports.
      writeTextFile = args: mkCaptured args.name (builtins.toFile args.name args.text) args;
      writeShellScript = script;
      writeScript = script;
      writeShellScriptBin = name: text: captured name { inherit text; };
      writeShellApplication = args: captured args.name args;
      closureInfo = args: captured "closure-info" args;
      testers.runNixOSTest = args: args;
    });

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
          type =
            with types;
            attrsOf (
              nullOr (oneOf [
                str
                path
                package
              ])
            );
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
        # nixos/modules/system/boot/stage-1.nix's options that the real
        # systemd/initrd.nix reads.
        enable = mkOption {
          type = types.bool;
          default = true;
        };
        osRelease = mkOption {
          type = types.path;
          default = pkgs.writeText "initrd-release" "NAME=NixOS\n";
        };
        extraFirmwarePaths = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        compressor = mkOption {
          type = types.either types.str (types.functionTo types.str);
          default = "zstd";
        };
        compressorArgs = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
        };
        prepend = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        network.postCommands = mkOption {
          type = types.lines;
          default = "";
        };
      }
      //
        lib.genAttrs
          [
            "preFailCommands"
            "preDeviceCommands"
            "preLVMCommands"
            "postDeviceCommands"
            "postResumeCommands"
            "postMountCommands"
            "extraUdevRulesCommands"
            "extraUtilsCommands"
            "extraUtilsCommandsTest"
          ]
          (
            _:
            mkOption {
              type = types.lines;
              default = "";
            }
          );
      # nixos/modules/system/boot/kernel.nix, resume, hardware/firmware.
      options.boot.resumeDevice = mkOption {
        type = types.str;
        default = "";
      };
      options.boot.kernelPackages = mkOption {
        type = types.raw;
        default = {
          kernel = pkgs.linux;
        };
      };
      options.hardware.firmware = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      options.system.modulesTree = mkOption {
        type = types.listOf types.path;
        default = [ ];
      };

      config = {
        _module.args.utils = import (nixosLib + "/utils.nix") { inherit lib config pkgs; };
        systemd.units = unitsOf config.systemd;
      };
    };

  # nixos/modules/system/boot/stage-1.nix's `neededForBoot`, added to each
  # fileSystems entry as stage-1.nix does (the rest of the entry's type is
  # the real filesystems.nix's and overlayfs.nix's).
  stage1Module = {
    options.fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.neededForBoot = mkOption {
            type = types.bool;
            default = false;
            description = "Mount in stage 1.";
          };
        }
      );
    };
  };

  # nixos/modules/system/etc/etc.nix's environment.etc: `text` becomes
  # `source` (a writeText of it) with the text's priority, so `.text` of an
  # entry set through `.source` (nix.nix's nix.conf) is null, as on NixOS.
  etcModule =
    { pkgs, ... }:
    {
      options.environment.etc = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule (
            {
              name,
              config,
              options,
              ...
            }:
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
                source = mkOption { type = types.path; };
                mode = mkOption {
                  type = types.str;
                  default = "symlink";
                };
                uid = mkOption {
                  type = types.int;
                  default = 0;
                };
                gid = mkOption {
                  type = types.int;
                  default = 0;
                };
                user = mkOption {
                  type = types.str;
                  default = "+${toString config.uid}";
                };
                group = mkOption {
                  type = types.str;
                  default = "+${toString config.gid}";
                };
              };
              config.source = lib.mkIf (config.text != null) (
                lib.mkDerivedConfig options.text (pkgs.writeText ("etc-" + lib.replaceStrings [ "/" ] [ "-" ] name))
              );
            }
          )
        );
      };
    };

  # nixos/modules/services/system/nix-daemon.nix's nix.enable and
  # nix.package (that file itself needs lib.mdDoc and the display manager's
  # options), and its units reduced to what systemd needs to load them.
  nixDaemonModule =
    { config, pkgs, ... }:
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

  # The other options a configuration (the module, the VM test nodes, the
  # README, the real modules above and qemu-vm.nix) sets, each declared
  # with the type the nixpkgs module that owns it gives it (named per
  # group), without a freeform type: a misspelt option fails to evaluate.
  miscModule =
    { config, pkgs, ... }:
    let
      opt = type: default: mkOption { inherit type default; };
      bool = opt types.bool;
      str = opt types.str;
      strs = opt (types.listOf types.str) [ ];
      userOpts =
        { name, ... }:
        {
          # nixos/modules/config/users-groups.nix (the options tests use).
          options = {
            name = str name;
            uid = opt (types.nullOr types.int) null;
            isNormalUser = bool false;
            isSystemUser = bool false;
            group = str "";
            extraGroups = strs;
            description = str "";
            home = str "/var/empty";
            createHome = bool false;
            shell = opt (types.nullOr (types.either types.shellPackage types.path)) null;
            password = opt (types.nullOr types.str) null;
            hashedPassword = opt (types.nullOr types.str) null;
            initialPassword = opt (types.nullOr types.str) null;
            packages = opt (types.listOf types.package) [ ];
          };
        };
      groupOpts =
        { name, ... }:
        {
          options = {
            name = str name;
            gid = opt (types.nullOr types.int) null;
            members = strs;
          };
        };
      swapOpts = {
        # nixos/modules/config/swap.nix (what filesystems.nix reads).
        options = {
          device = str "";
          realDevice = str "";
          options = opt (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
          priority = opt (types.nullOr types.int) null;
          discardPolicy = opt (types.nullOr (
            types.enum [
              "once"
              "pages"
              "both"
            ]
          )) null;
        };
      };
    in
    {
      options = {
        # nixos/modules/misc/meta.nix
        meta.maintainers = opt (types.listOf types.raw) [ ];
        meta.doc = opt (types.nullOr types.path) null;
        meta.buildDocsInSandbox = bool true;
        # nixos/modules/config/system-path.nix, shells-environment.nix
        environment.systemPackages = opt (types.listOf types.package) [ ];
        environment.variables =
          let
            atom = types.oneOf [
              types.int
              types.str
              types.path
            ];
          in
          opt (types.attrsOf (types.either (types.listOf atom) atom)) { };
        environment.sessionVariables = opt (types.attrsOf types.anything) { };
        # nixos/modules/config/users-groups.nix
        users.users = opt (types.attrsOf (types.submodule userOpts)) { };
        users.groups = opt (types.attrsOf (types.submodule groupOpts)) { };
        users.mutableUsers = bool true;
        # nixos/modules/misc/ids.nix (the gids filesystems.nix names)
        ids.gids = opt (types.attrsOf types.int) {
          keys = 96;
          tty = 3;
        };
        # nixos/modules/system/boot/kernel.nix, stage-2.nix, tmp.nix,
        # nixos/modules/virtualisation/container-config.nix, nspawn
        boot.kernelModules = strs;
        boot.kernelParams = strs;
        boot.postBootCommands = opt types.lines "";
        boot.tmp.useTmpfs = bool false;
        boot.tmp.tmpfsSize = opt (types.oneOf [
          types.str
          types.ints.positive
        ]) "50%";
        boot.isContainer = bool false;
        boot.isNspawnContainer = bool false;
        boot.initrd.luks.devices = opt (types.attrsOf (types.submodule { options.device = str ""; })) { };
        # nixos/modules/system/boot/loader/{loader,grub/grub,limine/limine,efi}.nix
        boot.loader.grub.enable = bool true;
        boot.loader.grub.device = str "";
        boot.loader.grub.devices = strs;
        boot.loader.grub.gfxmodeBios = str "1024x768";
        boot.loader.limine.biosDevice = str "nodev";
        boot.loader.systemd-boot.enable = bool false;
        boot.loader.supportsInitrdSecrets = bool false;
        boot.loader.efi.efiSysMountPoint = str "/boot";
        boot.loader.timeout = opt (types.nullOr types.int) 5;
        # nixos/modules/system/activation/switchable-system.nix
        system.switch.enable = bool true;
        system.switch.enableNg = bool true;
        # nixos/modules/system/activation/top-level.nix, system/boot/kernel.nix
        system.name = str "nixos";
        system.stateVersion = str "26.05";
        system.build = opt (types.submoduleWith {
          modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
        }) { };
        system.boot.loader.initrdFile = str "initrd";
        system.requiredKernelConfig = opt (types.listOf types.attrs) [ ];
        # nixos/modules/config/swap.nix
        swapDevices = opt (types.listOf (types.submodule swapOpts)) [ ];
        # nixos/modules/tasks/network-interfaces.nix, services/networking/dhcpcd.nix,
        # wpa_supplicant.nix
        networking.hostName = str "nixos";
        networking.useDHCP = bool true;
        networking.usePredictableInterfaceNames = bool true;
        networking.dhcpcd.extraConfig = opt types.lines "";
        networking.wireless.enable = bool false;
        networking.firewall.enable = bool true;
        # What qemu-vm.nix sets elsewhere (security/ca.nix, the services).
        security.pki.installCACerts = bool true;
        services.timesyncd.enable = bool true;
        services.qemuGuest.enable = bool false;
        services.connman.enable = bool false;
        services.xserver.videoDrivers = strs;
        services.xserver.defaultDepth = opt types.int 0;
        services.xserver.resolutions = opt (types.listOf types.attrs) [ ];
        services.xserver.monitorSection = opt types.lines "";
        # nixos/modules/misc/nixpkgs.nix (what a flake configuration sets)
        nixpkgs.hostPlatform = opt types.raw null;
        # nixos/modules/system/activation/specialisation.nix
        specialisation = opt (types.attrsOf (
          types.submodule {
            options.inheritParentConfig = bool true;
            options.configuration = opt types.deferredModule { };
          }
        )) { };
      };
      # Placeholders a caller may replace (tests/module-eval-local).
      config.system.build = {
        toplevel = lib.mkDefault (pkgs.runCommand "nixos-system-${config.system.name}" { } "");
        initialRamdisk = lib.mkDefault (pkgs.runCommand "initrd" { } "");
      };
    };

  # qemu-vm.nix imports files not in ../shared/nixpkgs: its qemu-guest
  # profile (kernel modules of a guest; nothing the module reads) and
  # disk-size-option.nix, stood in for here with that file's options.
  diskSizeModule =
    { config, ... }:
    {
      options.virtualisation.diskSizeAutoSupported = mkOption {
        type = types.bool;
        default = true;
        internal = true;
      };
      options.virtualisation.diskSize = mkOption {
        type = types.either (types.enum [ "auto" ]) types.ints.positive;
        default = if config.virtualisation.diskSizeAutoSupported then "auto" else 1024;
      };
      config.assertions = [
        {
          assertion = config.virtualisation.diskSize != "auto" || config.virtualisation.diskSizeAutoSupported;
          message = "Setting virtualisation.diskSize to `auto` is not supported by the current image build or vm runner; use an explicit size.";
        }
      ];
    };

  # The real qemu-vm.nix, with its imports that are not copied left out
  # (by name: anything else missing still fails).
  qemuVmModule =
    nixpkgs:
    let
      file = nixpkgs + "/nixos/modules/virtualisation/qemu-vm.nix";
      standIn = [
        (nixpkgs + "/nixos/modules/profiles/qemu-guest.nix")
        (nixpkgs + "/nixos/modules/virtualisation/disk-size-option.nix")
      ];
      inner = import file;
      wrapped = lib.setFunctionArgs (
        args:
        let
          m = inner args;
        in
        m
        // {
          imports = lib.filter (i: !lib.elem i standIn) m.imports;
        }
      ) (lib.functionArgs inner);
    in
    {
      _file = file;
      key = toString file;
      imports = [
        wrapped
        diskSizeModule
      ];
    };
in
{
  inherit mkPkgs fakeHash;
  # nixpkgs' own modules where ../shared/nixpkgs has them, stand-ins for the
  # rest.
  baseModules = nixpkgs: [
    (nixpkgs + "/nixos/modules/config/nix.nix")
    (nixpkgs + "/nixos/modules/tasks/filesystems.nix")
    (nixpkgs + "/nixos/modules/tasks/filesystems/erofs.nix")
    (nixpkgs + "/nixos/modules/tasks/filesystems/squashfs.nix")
    (nixpkgs + "/nixos/modules/tasks/filesystems/overlayfs.nix")
    (nixpkgs + "/nixos/modules/misc/assertions.nix")
    (nixpkgs + "/nixos/modules/system/boot/systemd/initrd.nix")
    systemdModule
    stage1Module
    etcModule
    nixDaemonModule
    miscModule
  ];
  vmModules = nixpkgs: [ (qemuVmModule nixpkgs) ];
  inherit qemuVmModule;
}
