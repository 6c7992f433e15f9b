# NixOS module: snix-lower-store, a read-only nix-daemon serving the lower
# layer of Nix's local-overlay store, plus the mounts, the index import and
# the Nix configuration around it.
#
# Interface (services.snix-lower-store.*), read by tests/nixos and by the local
# evaluation harness:
#   enable          bool
#   placement       "second-store" (default) | "system-store"
#   package         package (the flake sets it)
#   lower.mount     bool, default true: the module declares the lower mount
#                   from lower.device; false: the user mounts lower.storeDir
#   lower.device    null | str (required when lower.mount)
#   lower.fsType / lower.options / lower.deviceTimeout / lower.mountPoint /
#   lower.storeDir
#   lower.index     "import" (default): the registrations are imported into
#                   an index in stateDir; "image": the index inside the
#                   image (<image root>/.snix-lower-store/index beside
#                   lower.storeDir = <image root>/nix/store, written by
#                   mkLowerImage / build-index) is served as it is
#   lower.imageCheck "sample" | "full": serve's --image-check (image index)
#   lower.onBrokenPaths "refuse" (second store) | "invalidate" (system store,
#                   the only value allowed there): what the reconcile does
#                   with upper paths whose closure lost a lower path
#   overlay.root    null | str; second-store: "/var/lib/snix-overlay" by
#                   default; system-store: must be null
#   overlay.mountPoint / overlay.upperDir / overlay.workDir / overlay.state
#   configureNix    bool, default placement == "system-store"; required by
#                   system-store, refused with second-store
#   registrations   list of (path | str): Nix paths are copied to the store,
#                   strings are read at run time
#   closures        list of packages whose closureInfo registration is imported
#   socket.path / socket.mode / socket.group
#   environmentFile null | absolute path string outside the store
#                   (types.externalPath; EnvironmentFile= of daemon and import)
#   trustedUsers / idleExitAfter / logLevel / extraArgs / stateDir
#   storeUrl        read-only: the local-overlay:// URL
#   mounts          read-only: the fileSystems entries the module declares
#                   (second-store); in a VM (qemu-vm.nix) also declared in
#                   virtualisation.fileSystems
# Units (all defined here, none taken from the package): snix-lower-store.socket,
# snix-lower-store.service, snix-lower-store-import.service (lower.index =
# "import") or snix-lower-store-check.service (lower.index = "image"),
# snix-lower-store-reconcile.service (Nix's database of the merged store
# settled to the lower mounted now, after every import or check),
# snix-lower-store-overlay-dirs.service (second-store),
# snix-lower-store-nix-daemon-env.service (configureNix), and in the initrd
# (system-store) snix-lower-store-initrd-paths.service and the mounts
# /sysroot<lower.mountPoint> and /sysroot/nix/store.
{
  config,
  options,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.services.snix-lower-store;

  inherit (lib)
    literalExpression
    literalMD
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    optionalAttrs
    optionalString
    types
    ;

  urlLib = import ./store-url.nix;

  exe = lib.getExe' cfg.package "snix-lower-store";
  coreutil = name: "${pkgs.coreutils}/bin/${name}";

  systemStore = cfg.placement == "system-store";
  secondStore = cfg.placement == "second-store";

  # lower.index = "image": the daemon serves the index the image carries, so
  # nothing is imported and nothing is written; a one-line check unit takes
  # the import unit's place in front of the socket.
  imageIndex = cfg.lower.index == "image";
  # The image root R of a lower dir R/nix/store holds the index (and the id
  # serve checks it against) in R/.snix-lower-store, outside the store dir,
  # as build-index and mkLowerImage lay it out.
  imageRoot =
    if lib.hasSuffix "/nix/store" cfg.lower.storeDir then
      lib.removeSuffix "/nix/store" cfg.lower.storeDir
    else
      null;
  imageIndexFile = "${toString imageRoot}/.snix-lower-store/index";
  gateUnitName = if imageIndex then "snix-lower-store-check" else "snix-lower-store-import";
  gateUnit = "${gateUnitName}.service";

  # The module declares a lower mount only when asked to and given a device.
  hasLowerMount = cfg.lower.mount && cfg.lower.device != null;
  # A device systemd waits for: a /dev path, or a tag systemd resolves to
  # /dev/disk/by-* in an fstab line and in a mount unit's What= alike
  # (tests/systemd/device-facts). Only for these does
  # x-systemd.device-timeout= do anything; systemd ignores it for the rest.
  deviceTags = [
    "LABEL="
    "UUID="
    "PARTLABEL="
    "PARTUUID="
  ];
  isDeviceNode = d: lib.hasPrefix "/dev/" d || lib.any (t: lib.hasPrefix t d) deviceTags;
  lowerIsDevice = hasLowerMount && isDeviceNode cfg.lower.device;
  # lower.deviceTimeout given by the user: a definition of higher priority
  # than the option's default (mkOptionDefault, 1500).
  deviceTimeoutSet = options.services.snix-lower-store.lower.deviceTimeout.highestPrio < 1500;
  timeoutNotDevice = "services.snix-lower-store.lower.deviceTimeout = \"${cfg.lower.deviceTimeout}\" has no effect: lower.device = \"${toString cfg.lower.device}\" is no device path under /dev nor a LABEL=/UUID=/PARTLABEL=/PARTUUID= tag, and systemd waits only for devices (it ignores x-systemd.device-timeout= for anything else). Remove the setting.";
  # Paths inside the nested lower-store URL that must be percent-encoded:
  # Nix 2.34 opens such a URL, Nix 2.26 decodes lower-store= twice and does
  # not (tests/nix-parse 5).
  encodedInUrl = lib.filter (p: builtins.match "[A-Za-z0-9._~/-]*" p == null) [
    cfg.socket.path
    cfg.lower.storeDir
  ];
  urlEncodingWarning = "services.snix-lower-store: ${lib.concatStringsSep " and " encodedInUrl} hold characters that are percent-encoded in the store URL (socket.path, lower.storeDir). Nix 2.34 opens it; Nix 2.26 decodes the nested lower-store= value twice and cannot. Paths of letters, digits, '-', '.', '_', '~' and '/' work with every Nix.";
  timeoutSystemStore = "services.snix-lower-store.lower.deviceTimeout = \"${cfg.lower.deviceTimeout}\" has no effect with placement = \"system-store\": the initrd mounts the lower image with systemd's default device timeout (DefaultDeviceTimeoutSec=, 90s unless changed). Remove the setting.";
  lowerUnit = "${utils.escapeSystemdPath cfg.lower.mountPoint}.mount";
  overlayUnit = "${utils.escapeSystemdPath cfg.overlay.mountPoint}.mount";
  # In the second store the lower mount is a stage-2 mount unit; in the
  # system store it is mounted in the initrd and is no unit of the system.
  lowerUnits = optional (hasLowerMount && secondStore) lowerUnit;

  # File systems the system-store lower may have: those for which a nixpkgs
  # module (nixos/modules/tasks/filesystems/{erofs,squashfs,ext}.nix) puts
  # the kernel module into the initrd when
  # boot.initrd.supportedFilesystems names them.
  initrdLowerFsTypes = [
    "erofs"
    "squashfs"
    "ext4"
  ];

  # system-store: until the next boot /nix/store is not the merged store and
  # the lower is not mounted (it is mounted in the initrd); the import, the
  # socket and the daemon are skipped (a condition, not a failure) until
  # then, so that a switch enabling the placement succeeds.
  systemStoreCondition = optionalAttrs systemStore {
    ConditionPathIsMountPoint = cfg.lower.mountPoint;
  };

  isUnder = parent: path: path == parent || lib.hasPrefix "${lib.removeSuffix "/" parent}/" path;
  isAbsolute = path: lib.hasPrefix "/" path;

  stateDirectoryName = lib.removePrefix "/var/lib/" cfg.stateDir;

  # A Nix path is copied into the store ("${p}" gives it string context), so
  # the file exists wherever the system closure goes; a string is a run-time
  # path (for example inside the lower image) and is used as it is.
  registrationPath = r: if builtins.isPath r then "${r}" else toString r;
  closureRegistration = pkgs.closureInfo { rootPaths = cfg.closures; };
  registrationFiles =
    map registrationPath cfg.registrations
    ++ optional (cfg.closures != [ ]) "${closureRegistration}/registration";

  storeUrl = urlLib.storeUrl {
    socket = cfg.socket.path;
    lowerDir = cfg.lower.storeDir;
    upperLayer = cfg.overlay.upperDir;
    state = cfg.overlay.state;
    root = cfg.overlay.root;
  };

  socketGroup = if cfg.socket.group == null then "root" else cfg.socket.group;

  commonEnvironment = {
    SNIX_LOWER_STORE_LOWER_DIR = cfg.lower.storeDir;
    SNIX_LOWER_STORE_STATE_DIR = cfg.stateDir;
    SNIX_LOWER_STORE_STORE_DIR = "/nix/store";
    SNIX_LOWER_STORE_LOG_LEVEL = cfg.logLevel;
    SNIX_LOWER_STORE_LOG_TARGET = "auto";
  };

  environmentFiles = optionalAttrs (cfg.environmentFile != null) {
    EnvironmentFile = cfg.environmentFile;
  };

  # Fails with one clear line when the lower store is not there, so that a
  # missing device ends in a failed unit that says why.
  checkLower = pkgs.writeShellScript "snix-lower-store-check-lower" ''
    set -eu
    ${optionalString (hasLowerMount && secondStore) ''
      if ! ${pkgs.util-linux}/bin/mountpoint -q ${lib.escapeShellArg cfg.lower.mountPoint}; then
        echo ${lib.escapeShellArg "snix-lower-store: lower store not mounted: ${cfg.lower.mountPoint} (device ${toString cfg.lower.device}, type ${cfg.lower.fsType}); see systemctl status ${lowerUnit}"} >&2
        exit 1
      fi
    ''}
    if [ ! -d ${lib.escapeShellArg cfg.lower.storeDir} ]; then
      echo ${lib.escapeShellArg "snix-lower-store: lower store directory missing: ${cfg.lower.storeDir} (services.snix-lower-store.lower.storeDir${optionalString (!cfg.lower.mount) "; lower.mount = false: mount it yourself"})"} >&2
      exit 1
    fi
  '';

  # The index only grows (import adds paths), so a different lower store
  # must start from an empty one: the import compares a fingerprint of the
  # lower as it is mounted now (the directory, the names of the store paths
  # in it, the contents of the registrations) with the one recorded after
  # the last successful import, and drops the index when they differ.
  # Everything in it is read from the running system, not from the
  # configuration, so it describes the lower that is really there (also
  # when a new lower.device only takes effect at the next boot).
  fingerprintFile = "${cfg.stateDir}/lower-fingerprint";
  lowerFingerprint = pkgs.writeShellScript "snix-lower-store-lower-fingerprint" ''
    set -eu
    export LC_ALL=C
    {
      printf '%s\n' ${lib.escapeShellArg cfg.lower.storeDir}
      ${coreutil "ls"} -1A -- ${lib.escapeShellArg cfg.lower.storeDir}
      ${lib.concatMapStrings (f: ''
        ${coreutil "sha256sum"} ${lib.escapeShellArg f}
      '') registrationFiles}
    } | ${coreutil "sha256sum"} | ${coreutil "cut"} -d' ' -f1
  '';
  dropStaleIndex = pkgs.writeShellScript "snix-lower-store-drop-stale-index" ''
    set -eu
    new=$(${lowerFingerprint})
    old=$(${coreutil "cat"} ${lib.escapeShellArg fingerprintFile} 2>/dev/null || true)
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
      ${coreutil "rm"} -f ${
        lib.escapeShellArgs (
          map (f: "${cfg.stateDir}/${f}") [
            "index.sqlite"
            "index.sqlite-wal"
            "index.sqlite-shm"
          ]
        )
      }
      echo "snix-lower-store: the lower store changed since the last import; the index is rebuilt from its registrations. Until ${reconcileUnit} has run, Nix's database of the merged store may still list paths of the old lower"
    fi
  '';
  recordFingerprint = pkgs.writeShellScript "snix-lower-store-record-fingerprint" ''
    set -eu
    ${lowerFingerprint} > ${lib.escapeShellArg "${fingerprintFile}.new"}
    ${coreutil "mv"} ${
      lib.escapeShellArgs [
        "${fingerprintFile}.new"
        fingerprintFile
      ]
    }
  '';

  # Image rotation (issue 21): Nix's local-overlay store copies the path
  # info of every lower path it looks at into its own (upper) database and
  # answers from there first, so after the lower changed it still believes
  # in paths of the old lower. `snix-lower-store reconcile` compares that
  # database and the upper layer with the index of the lower mounted now and
  # acts through Nix (nix-store --delete on the merged store): entries of
  # lower paths that are gone ("lost") or changed are dropped, and upper
  # paths whose closure reaches a lost path are invalidated or the unit
  # fails naming them (lower.onBrokenPaths). It records the lower it settled
  # in a file beside that database, so a lower that did not change costs one
  # comparison. It needs the lower daemon (the socket) and the merged store
  # mounted, and root: it writes Nix's database.
  reconcileUnitName = "snix-lower-store-reconcile";
  reconcileUnit = "${reconcileUnitName}.service";
  # Nix's state of the merged store: its database (db/db.sqlite), gcroots
  # and temproots; Nix's logs go beside it under <root>/nix/var/log.
  nixVarDir = if cfg.overlay.root == null then "/nix/var" else "${cfg.overlay.root}/nix/var";
  nixStateDir = if cfg.overlay.state == null then "${nixVarDir}/nix" else cfg.overlay.state;
  # Beside the database it describes: it goes when that database goes, and
  # it is there in both index modes (an image's index has no stateDir).
  settledFile = "${nixStateDir}/snix-lower-store-settled";
  reconcile = pkgs.writeShellScript "snix-lower-store-reconcile" ''
    set -u
    ${optionalString systemStore ''
      # Refusing would leave the system without a usable /nix/store.
      echo "snix-lower-store: system store: upper paths whose closure lost a lower path are invalidated, not refused (lower.onBrokenPaths = \"invalidate\")"
    ''}
    rc=0
    ${exe} reconcile ${
      lib.escapeShellArgs (
        [
          "--store-url"
          storeUrl
          "--nix-store"
          "${lib.getBin config.nix.package}/bin/nix-store"
          "--on-broken"
          cfg.lower.onBrokenPaths
          "--settled-file"
          settledFile
        ]
        ++ lib.optionals imageIndex [
          "--index"
          imageIndexFile
        ]
      )
    } || rc=$?
    if [ "$rc" = 1 ]; then
      echo ${lib.escapeShellArg "snix-lower-store: the lower store changed and upper paths named above lost part of their closure; nothing was changed for them (services.snix-lower-store.lower.onBrokenPaths = \"refuse\"). To proceed: set lower.onBrokenPaths = \"invalidate\" and switch again (they are deleted with their referrers and can be rebuilt), or delete them yourself with nix-store --store \"$(cat /etc/snix-lower-store/store-url)\" --delete --ignore-liveness PATH... and run systemctl restart ${reconcileUnit}, or put the previous lower back."} >&2
    fi
    exit "$rc"
  '';

  # system-store + configureNix: nix-daemon uses the local-overlay store only
  # once /nix/store really is the merged store (after the next boot); until
  # then it keeps the plain local store it was started with.
  nixDaemonEnvDir = "/run/snix-lower-store-nix";
  nixDaemonEnv = pkgs.writeShellScript "snix-lower-store-nix-daemon-env" ''
    set -eu
    env=${nixDaemonEnvDir}/nix-daemon.env
    fstype=$(${pkgs.util-linux}/bin/findmnt -n -o FSTYPE --mountpoint /nix/store | ${coreutil "tail"} -n 1 || true)
    opts=$(${pkgs.util-linux}/bin/findmnt -n -o OPTIONS --mountpoint /nix/store | ${coreutil "tail"} -n 1 || true)
    merged=no
    if [ "$fstype" = overlay ]; then
      case ",$opts," in
        *,lowerdir=${cfg.lower.storeDir},*) case ",$opts," in *,upperdir=${cfg.overlay.upperDir},*) merged=yes ;; esac ;;
      esac
    fi
    if [ "$merged" = yes ]; then
      printf '%s\n' ${lib.escapeShellArg "NIX_CONFIG='store = ${storeUrl}'"} > "$env"
      echo "snix-lower-store: /nix/store is the merged store; nix-daemon uses the local-overlay store"
    else
      # nix.conf says store = daemon (for the clients); nix-daemon itself
      # must not forward to itself.
      printf '%s\n' "NIX_CONFIG='store = local'" > "$env"
      echo "snix-lower-store: /nix/store is not the merged store yet (it is mounted in the initrd at the next boot); nix-daemon keeps the plain local store until then"
    fi
  '';

  # Paths the initrd must resolve exactly as the booted system will, so that
  # the overlay's lowerdir=/upperdir= strings (compared by Nix's check-mount)
  # are the final paths and not /sysroot/... ones.
  initrdLinks = [
    cfg.lower.mountPoint
    cfg.overlay.upperDir
    cfg.overlay.workDir
  ];
  initrdLowerUnit = "${utils.escapeSystemdPath "/sysroot${cfg.lower.mountPoint}"}.mount";

  # Run in the initrd before the overlay is mounted: upper and work
  # directories, the links above, and on the first boot with the merged store
  # the old Nix database moved aside (it lists paths the overlay now hides).
  initrdPaths = pkgs.writeShellScript "snix-lower-store-initrd-paths" ''
    set -eu
    ${coreutil "mkdir"} -p -m 0755 ${
      lib.escapeShellArgs [
        "/sysroot${cfg.overlay.upperDir}"
        "/sysroot${cfg.overlay.workDir}"
      ]
    }
    ${lib.concatMapStrings (p: ''
      ${coreutil "mkdir"} -p ${lib.escapeShellArg (dirOf p)}
      ${coreutil "ln"} -sfn ${
        lib.escapeShellArgs [
          "/sysroot${p}"
          p
        ]
      }
    '') initrdLinks}
    ${optionalString (cfg.overlay.state == null) ''
      marker=${lib.escapeShellArg "/sysroot${dirOf cfg.overlay.upperDir}/.snix-lower-store-db-moved"}
      db=/sysroot/nix/var/nix/db
      if [ ! -e "$marker" ]; then
        if [ -e "$db" ]; then
          ${coreutil "mv"} "$db" "$db.before-snix-lower-store"
          echo "snix-lower-store: moved the Nix database of the store the overlay now hides to /nix/var/nix/db.before-snix-lower-store"
        fi
        : > "$marker"
      fi
    ''}
  '';

  sandbox = {
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateMounts = true;
    PrivateDevices = true;
    PrivateIPC = true;
    PrivateNetwork = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictAddressFamilies = "AF_UNIX";
    IPAddressDeny = "any";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    KeyringMode = "private";
    DevicePolicy = "closed";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  # Both run as this DynamicUser, so the same dynamic UID owns the index. An
  # image's own index needs no state directory: nothing is written.
  identity = {
    DynamicUser = true;
    User = "snix-lower-store";
    UMask = "0077";
    ReadOnlyPaths = [ "-${cfg.lower.storeDir}" ];
  }
  // optionalAttrs (!imageIndex) {
    StateDirectory = stateDirectoryName;
    StateDirectoryMode = "0700";
  };

  # lower.index = "image": the lower is there and carries its index; one
  # line that says what to do when it does not.
  checkImageIndex = pkgs.writeShellScript "snix-lower-store-check-image-index" ''
    set -eu
    if [ ! -f ${lib.escapeShellArg imageIndexFile} ]; then
      echo ${lib.escapeShellArg "snix-lower-store: the lower store has no index of its own: ${imageIndexFile} is missing (services.snix-lower-store.lower.index = \"image\"). Build the image with the flake's lib.mkLowerImage or `snix-lower-store build-index`, or set lower.index = \"import\" and registrations."} >&2
      exit 1
    fi
  '';

  # The second store's mounts, as fileSystems entries.
  secondStoreMounts =
    lib.optionalAttrs hasLowerMount {
      ${cfg.lower.mountPoint} = {
        device = cfg.lower.device;
        fsType = cfg.lower.fsType;
        options =
          cfg.lower.options
          ++ optional lowerIsDevice "x-systemd.device-timeout=${cfg.lower.deviceTimeout}"
          # A second store never stops the boot: its mounts are only wanted.
          ++ [ "nofail" ];
        # filesystems.nix runs fsck on every fstab line whose type is not in
        # its skip list (erofs is not): a read-only image needs no check.
        noCheck = true;
      };
    }
    // {
      ${cfg.overlay.mountPoint} = {
        device = "overlay";
        fsType = "overlay";
        options = [
          "lowerdir=${cfg.lower.storeDir}"
          "upperdir=${cfg.overlay.upperDir}"
          "workdir=${cfg.overlay.workDir}"
          "nofail"
          "x-systemd.requires=snix-lower-store-overlay-dirs.service"
        ];
        # Requires= and After= on the lower mount and the upper file system.
        depends = [
          cfg.lower.storeDir
          cfg.overlay.upperDir
          cfg.overlay.workDir
        ];
      };
    };
in
{
  imports = [
    (lib.mkRenamedOptionModule
      [
        "services"
        "snix-lower-store"
        "nix"
        "enable"
      ]
      [
        "services"
        "snix-lower-store"
        "configureNix"
      ]
    )
  ];

  options.services.snix-lower-store = {
    enable = mkEnableOption "snix-lower-store, a read-only nix-daemon serving the lower layer of a local-overlay Nix store";

    package = mkPackageOption pkgs "snix-lower-store" { };

    placement = mkOption {
      type = types.enum [
        "second-store"
        "system-store"
      ];
      default = "second-store";
      example = "system-store";
      description = ''
        Where the merged store is.

        `"second-store"`: a second Nix store under
        {option}`services.snix-lower-store.overlay.root`, next to the
        system's `/nix/store`, which is left alone. Its mounts are `nofail`:
        a missing lower device never stops the boot. Use it as root with
        `nix --store "$(cat /etc/snix-lower-store/store-url)"`.

        `"system-store"`: the merged store is the system's `/nix/store`,
        mounted in the initrd (needs `boot.initrd.systemd.enable`) over a
        lower image that must hold this system's closure, as netboot images
        do; nix-daemon uses the local-overlay store. It takes effect at the
        next boot, never on switch; see docs/src/nixos-switch.md for the migration of an
        existing machine.
      '';
    };

    lower = {
      mount = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = ''
          Whether the module mounts the lower store from
          {option}`services.snix-lower-store.lower.device` at
          {option}`services.snix-lower-store.lower.mountPoint`. `false`:
          you mount it yourself (any way you like) so that
          {option}`services.snix-lower-store.lower.storeDir` exists; the
          import and the daemon wait for it with `RequiresMountsFor=`.
          The system-store placement needs `true`.
        '';
      };

      device = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/dev/disk/by-label/lower-store";
        description = ''
          What holds the lower store, mounted read-only: a block device with
          an erofs or squashfs image, a virtiofs tag, an NFS export
          (`server:/export`), or a directory to bind (with
          {option}`services.snix-lower-store.lower.fsType` `"none"` and
          `"bind"` in {option}`services.snix-lower-store.lower.options`).
          Required when {option}`services.snix-lower-store.lower.mount` is
          `true`: the module does not guess a device.
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
          Second store: how long to wait for the lower device to appear
          before the mount fails (`x-systemd.device-timeout=` on its fstab
          line). It applies to a device path under /dev and to a
          `LABEL=`, `UUID=`, `PARTLABEL=` or `PARTUUID=` tag, the devices
          systemd waits for; systemd ignores it for anything else (a virtiofs
          tag, an NFS export, a directory to bind), so setting it there, or
          with the system-store placement (whose initrd mount waits as long
          as systemd's `DefaultDeviceTimeoutSec=`), gives a warning naming
          this option.
        '';
      };

      mountPoint = mkOption {
        type = types.str;
        # Keyed on overlay.root like the other defaults, so that a second
        # store without a root reaches its assertion instead of a throw.
        default = if cfg.overlay.root == null then "/nix/.snix-lower" else "${cfg.overlay.root}/lower";
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
          its top, as nixpkgs' `make-squashfs.nix` builds them. This flake's
          `lib.mkLowerImage` puts them in `nix/store/`, the default.
        '';
      };

      index = mkOption {
        type = types.enum [
          "import"
          "image"
        ];
        default = "import";
        example = "image";
        description = ''
          Where the daemon's index comes from.

          `"import"`: `snix-lower-store-import.service` imports
          {option}`services.snix-lower-store.registrations` and
          {option}`services.snix-lower-store.closures` into an index in
          {option}`services.snix-lower-store.stateDir` before the socket
          starts (at every boot; a new lower rebuilds it). For any lower
          store with a registration.

          `"image"`: the lower image carries its own index: for
          {option}`services.snix-lower-store.lower.storeDir`
          `<image root>/nix/store` (by default the image root is
          {option}`services.snix-lower-store.lower.mountPoint`), at
          `<image root>/.snix-lower-store/index`, as the flake's
          `lib.mkLowerImage` and `snix-lower-store build-index` write it. The
          daemon opens it read-only (`serve --index`) and checks it against
          the image at start; there is no import unit, nothing is written
          (no state directory), and the socket listens as soon as the lower
          is mounted. `registrations` and `closures` must be empty.
        '';
      };

      imageCheck = mkOption {
        type = types.enum [
          "sample"
          "full"
        ];
        default = "sample";
        example = "full";
        description = ''
          With {option}`services.snix-lower-store.lower.index` `"image"`: how
          the daemon checks at start that the index describes the mounted
          image (`serve --image-check`). `"sample"`: the image id and 1024
          indexed paths, the same cost at any size; `"full"`: also one
          listing of the whole lower directory.
        '';
      };

      onBrokenPaths = mkOption {
        type = types.enum [
          "refuse"
          "invalidate"
        ];
        default = if systemStore then "invalidate" else "refuse";
        defaultText = literalExpression ''
          if config.services.snix-lower-store.placement == "system-store"
          then "invalidate"
          else "refuse"
        '';
        example = "invalidate";
        description = ''
          What `snix-lower-store-reconcile.service` does, after the lower
          store changed (another device or image, other registrations), with
          paths of the upper layer whose closure reaches a lower path that
          is gone (for example something built on the old lower that refers
          to one of its paths). Lower paths that are gone or changed are
          always dropped from Nix's database; these upper paths would be
          valid in name only.

          `"refuse"` (the second store's default): they are left as they
          are and the unit fails, naming them and how to proceed; a switch
          that changed the lower fails with it. `"invalidate"`: they are
          deleted through Nix, with every path referring to them, and the
          journal names them; a build that needs them builds them again (or
          substitutes them).

          The system-store placement only allows `"invalidate"`: refusing
          at boot would leave the system's `/nix/store` unusable.
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
      type = types.listOf (types.either types.path types.str);
      default = [ ];
      example = literalExpression ''[ "/srv/lower/registration" ./lower-registration ]'';
      description = ''
        Registration files (`nix-store --dump-db` output, or `closureInfo`'s
        `registration`) describing the paths of the lower store. They are
        imported into the index by `snix-lower-store-import.service` before
        the socket starts, at every boot, every switch that changes them and
        every restart of the lower mount; importing paths already indexed
        changes nothing.

        A Nix path (`./file`) is copied into the store and so travels with
        the system closure; a string (`"/srv/lower/registration"`) is read at
        run time where it is, for example from inside the lower image.
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
        part of the system closure (so this cannot name the system's own
        toplevel).
      '';
    };

    socket = {
      path = mkOption {
        type = types.str;
        default = "/run/snix-lower-store/socket";
        example = "/run/lower-store.sock";
        description = ''
          Path of the listening socket (the lower store URL is `unix://` this
          path). A change is applied on switch: the socket is stopped and
          started again, and the store URL follows.
        '';
      };

      mode = mkOption {
        type = types.strMatching "0?[0-7]{3}";
        default = "0666";
        example = "0660";
        description = "Permissions of the socket; applied on switch like the path.";
      };

      group = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "nixbld";
        description = "Group owning the socket; `null` leaves it to root. Applied on switch like the path.";
      };
    };

    overlay = {
      root = mkOption {
        type = types.nullOr types.str;
        default = if secondStore then "/var/lib/snix-overlay" else null;
        defaultText = literalExpression ''
          if config.services.snix-lower-store.placement == "second-store"
          then "/var/lib/snix-overlay"
          else null
        '';
        example = "/srv/snix-overlay";
        description = ''
          Second store: its root (Nix's `root`); the merged store is
          `<root>/nix/store`. Must be `null` with the system-store placement.
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

    configureNix = mkOption {
      type = types.bool;
      default = systemStore;
      defaultText = literalExpression ''config.services.snix-lower-store.placement == "system-store"'';
      example = true;
      description = ''
        Make the merged store Nix's store: `nix.settings.store = "daemon"`
        for every client (so nothing opens /nix/store as a plain local
        store), and nix-daemon opens the local-overlay store
        ({option}`services.snix-lower-store.storeUrl`) once /nix/store is
        the merged store. Required by the system-store placement; refused
        with the second store (nix-daemon would build into a store the
        system does not boot from).

        This is not the global {option}`nix.enable`.
      '';
    };

    environmentFile = mkOption {
      # externalPath: an absolute path given as a string, outside the store;
      # a Nix path value (./file) is refused rather than used uncopied.
      type = types.nullOr types.externalPath;
      default = null;
      example = "/run/secrets/snix-lower-store.env";
      description = ''
        File of `KEY=value` lines (systemd's `EnvironmentFile=`) read by the
        daemon and the import at start, after the module's own
        `Environment=` lines, so it can override them. It is read at run
        time and never copied into the store: give an absolute path as a
        string (a Nix path value or a store path is refused). The NixOS
        units never read the package's `/etc/snix-lower-store/env`.
      '';
    };

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
      defaultText = literalMD "the `local-overlay://` URL `snix-lower-store store-url` prints for these options";
      example = "local-overlay://?root=/var/lib/snix-overlay&lower-store=unix%3A///run/snix-lower-store/socket%3Freal%3D/var/lib/snix-overlay/lower/nix/store&upper-layer=/var/lib/snix-overlay/upper&check-mount=true";
      description = ''
        The `local-overlay://` URL of the merged store, percent-encoded as
        `snix-lower-store store-url` prints it. Also in
        /etc/snix-lower-store/store-url.
      '';
    };

    mounts = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      default = if cfg.enable && secondStore then secondStoreMounts else { };
      defaultText = literalMD "the second store's lower and overlay mounts, `{ }` otherwise";
      example = literalExpression ''
        {
          "/var/lib/snix-overlay/lower" = {
            device = "/dev/disk/by-label/lower-store";
            fsType = "erofs";
            options = [ "ro" "x-systemd.device-timeout=90s" "nofail" ];
            noCheck = true;
          };
          "/var/lib/snix-overlay/nix/store" = {
            device = "overlay";
            fsType = "overlay";
            options = [ "lowerdir=/var/lib/snix-overlay/lower/nix/store" "…" ];
          };
        }
      '';
      description = ''
        The `fileSystems` entries the module declares (second store). Inside
        a NixOS test or `nixos-rebuild build-vm`, nixpkgs' `qemu-vm.nix`
        replaces `fileSystems` with `virtualisation.fileSystems`; the module
        then declares these entries in `virtualisation.fileSystems` too, so
        a test VM needs nothing more than the lower device.
      '';
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = !cfg.lower.mount || cfg.lower.device != null;
          message = "services.snix-lower-store.lower.device is not set: give the device holding the lower store (for example \"/dev/disk/by-label/lower-store\"), or set lower.mount = false if you mount lower.storeDir (${cfg.lower.storeDir}) yourself. Nothing is mounted until one of them is set.";
        }
        {
          assertion = secondStore -> cfg.overlay.root != null;
          message = "services.snix-lower-store.overlay.root = null with placement = \"second-store\": a second store needs its own root. To make the merged store the system's /nix/store, set placement = \"system-store\".";
        }
        {
          assertion = systemStore -> cfg.overlay.root == null;
          message = "services.snix-lower-store.overlay.root = \"${toString cfg.overlay.root}\" with placement = \"system-store\": the system store has no root; leave overlay.root unset.";
        }
        {
          assertion = systemStore -> config.boot.initrd.systemd.enable;
          message = "services.snix-lower-store.placement = \"system-store\" mounts the merged /nix/store in the initrd and needs boot.initrd.systemd.enable = true (the scripted initrd would mount it with /mnt-root-prefixed lowerdir=/upperdir= strings, which Nix's check-mount rejects).";
        }
        {
          assertion = systemStore -> (cfg.lower.mount && cfg.lower.device != null);
          message = "services.snix-lower-store.placement = \"system-store\" needs lower.mount = true and lower.device: the lower image, holding this system's closure, is mounted in the initrd.";
        }
        {
          assertion = systemStore -> (imageIndex || cfg.registrations != [ ] || cfg.closures != [ ]);
          message = "services.snix-lower-store.placement = \"system-store\": set registrations (for example the registration file inside the lower image), or lower.index = \"image\" for an image carrying its own index: the index must describe the lower image, which must hold this system's closure.";
        }
        {
          assertion = imageIndex -> imageRoot != null;
          message = "services.snix-lower-store.lower.index = \"image\" with lower.storeDir = \"${cfg.lower.storeDir}\": an image's own index lies in <image root>/.snix-lower-store beside its store dir <image root>/nix/store, so lower.storeDir must end in /nix/store (the default, <lower.mountPoint>/nix/store, as lib.mkLowerImage lays the image out). For store objects at the top of the mount, use lower.index = \"import\".";
        }
        {
          assertion = imageIndex -> (cfg.registrations == [ ] && cfg.closures == [ ]);
          message = "services.snix-lower-store.lower.index = \"image\" serves the index inside the image (${imageIndexFile}) and imports nothing, but registrations or closures are set. Remove them, or set lower.index = \"import\" to import them (for an image without its own index).";
        }
        {
          assertion = systemStore -> cfg.lower.onBrokenPaths == "invalidate";
          message = "services.snix-lower-store.lower.onBrokenPaths = \"${cfg.lower.onBrokenPaths}\" with placement = \"system-store\": the check runs at boot before nix-daemon, and refusing there would leave the system's /nix/store unusable. The system store invalidates such paths (and says so in the journal of snix-lower-store-reconcile.service); leave the option unset or set it to \"invalidate\".";
        }
        {
          assertion = systemStore -> cfg.configureNix;
          message = "services.snix-lower-store.placement = \"system-store\" needs configureNix = true: a plain local store over the merged /nix/store does not know the lower paths and its garbage collector would delete them.";
        }
        {
          assertion = secondStore -> !cfg.configureNix;
          message = "services.snix-lower-store.configureNix = true with placement = \"second-store\" would make nix-daemon build into ${toString cfg.overlay.root}, a store the system does not boot from. Use the second store with nix --store \"$(cat /etc/snix-lower-store/store-url)\", or set placement = \"system-store\".";
        }
        {
          assertion = cfg.configureNix -> config.nix.enable;
          message = "services.snix-lower-store.configureNix needs nix.enable = true (there is no nix-daemon to point at the merged store).";
        }
        {
          assertion = isUnder "/var/lib" cfg.stateDir && cfg.stateDir != "/var/lib";
          message = "services.snix-lower-store.stateDir = \"${cfg.stateDir}\": it must be a directory under /var/lib (the services' StateDirectory=, owned by their DynamicUser=).";
        }
        {
          assertion =
            cfg.overlay.root == null
            || (isAbsolute cfg.overlay.root && lib.removeSuffix "/" cfg.overlay.root != "");
          message = "services.snix-lower-store.overlay.root = \"${toString cfg.overlay.root}\": give an absolute directory other than /.";
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
            !(isUnder cfg.overlay.mountPoint cfg.lower.storeDir)
            && !(isUnder cfg.lower.storeDir cfg.overlay.mountPoint);
          message = "services.snix-lower-store: lower.storeDir = \"${cfg.lower.storeDir}\" and the merged store ${cfg.overlay.mountPoint} overlap; the lower layer must be a separate directory.";
        }
        {
          assertion =
            lib.all (dir: !(isUnder cfg.overlay.mountPoint dir) && !(isUnder cfg.lower.mountPoint dir))
              [
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
          assertion = systemStore -> lib.elem cfg.lower.fsType initrdLowerFsTypes;
          message = "services.snix-lower-store.lower.fsType = \"${cfg.lower.fsType}\" with placement = \"system-store\": the lower image is mounted in the initrd, which gets its file system through boot.initrd.supportedFilesystems; use one of ${lib.concatStringsSep ", " initrdLowerFsTypes}.";
        }
        {
          assertion = systemStore -> lib.all (p: !(isUnder "/nix/store" p)) initrdLinks;
          message = "services.snix-lower-store: with the merged store at /nix/store, lower.mountPoint, overlay.upperDir and overlay.workDir must lie outside /nix/store.";
        }
      ];

      warnings =
        optional (deviceTimeoutSet && hasLowerMount && secondStore && !lowerIsDevice) timeoutNotDevice
        ++ optional (deviceTimeoutSet && systemStore) timeoutSystemStore
        ++ optional (encodedInUrl != [ ]) urlEncodingWarning;

      environment.systemPackages = [ cfg.package ];

      # A line of nix.conf of its own, not nix.settings: nix.nix types a
      # setting as `either confAtom (listOf confAtom)`, which cannot merge a
      # user's string (extra-experimental-features = "flakes") with a list of
      # ours. nix.nix (writeTextFile, and pkgs.formats.nixConf in newer
      # nixpkgs) writes extraOptions after every setting, so this extra- line
      # adds to the features whatever form the user's settings take; mkAfter
      # keeps it after a user's own extraOptions lines.
      nix.extraOptions = lib.mkAfter "extra-experimental-features = local-overlay-store";

      environment.etc."snix-lower-store/store-url".text = storeUrl + "\n";

      # The unit in front of the socket: snix-lower-store-import checks the
      # lower store and imports the registrations; with an image's own index
      # snix-lower-store-check only checks that the lower and its index are
      # there. As the daemon's DynamicUser, before the socket accepts
      # anything. Part of the lower mount: stopping or restarting the mount
      # stops or re-runs it (and, through Requires=, the socket and the
      # daemon).
      systemd.services.${gateUnitName} = {
        description =
          if imageIndex then
            "snix-lower-store: check the lower store and its own index"
          else
            "snix-lower-store: check the lower store and import its registrations";
        documentation = [ "https://github.com/snix-lower-store/snix-lower-store#nixos" ];
        # The reconcile follows every run of this unit (After= it): a new
        # index is never left without Nix's database being settled to it.
        wants = lowerUnits ++ [
          "snix-lower-store.socket"
          reconcileUnit
        ];
        partOf = lowerUnits;
        after = lowerUnits;
        before = [
          "snix-lower-store.socket"
          "snix-lower-store.service"
        ];
        # Only when the module does not mount the lower itself: a Requires=
        # on the module's (nofail) lower mount would end the import in
        # "dependency failed" before checkLower can say why.
        unitConfig =
          optionalAttrs (!hasLowerMount) {
            RequiresMountsFor = [ cfg.lower.storeDir ];
          }
          // systemStoreCondition;
        # switch-to-configuration ignores changed socket units; a change of
        # the socket's options restarts this unit instead, which stops the
        # socket (Requires=) and starts it again (Wants=) with the new ones.
        restartTriggers = [
          cfg.socket.path
          cfg.socket.mode
          socketGroup
        ];
        environment = commonEnvironment;
        serviceConfig =
          sandbox
          // identity
          // environmentFiles
          // {
            Type = "oneshot";
            RemainAfterExit = true;
          }
          // (
            if imageIndex then
              {
                ExecStart = [
                  "${checkLower}"
                  "${checkImageIndex}"
                ];
              }
            else
              {
                ExecStartPre = [
                  "${checkLower}"
                  "${dropStaleIndex}"
                ];
                ExecStartPost = "${recordFingerprint}";
                # The import tells how far it is in STATUS= (sd_notify), so
                # `systemctl status` shows it; a oneshot unit drops such
                # messages unless the main process (each ExecStart=) may send.
                NotifyAccess = "main";
                ExecStart =
                  if registrationFiles == [ ] then
                    [ "${pkgs.coreutils}/bin/true" ]
                  else
                    map (f: "${exe} import --registration ${utils.escapeSystemdExecArg f}") registrationFiles;
              }
          );
      };

      # The whole daemon unit, not drop-ins over the package's: nothing of the
      # non-NixOS defaults (RequiresMountsFor=/srv/lower/nix/store,
      # EnvironmentFile=-/etc/snix-lower-store/env) can leak in.
      systemd.services.snix-lower-store = {
        description = "snix-lower-store: read-only nix-daemon serving a local-overlay lower store";
        documentation = [ "https://github.com/snix-lower-store/snix-lower-store#nixos" ];
        requires = [
          "snix-lower-store.socket"
          gateUnit
        ];
        after = [
          "snix-lower-store.socket"
          gateUnit
        ]
        ++ lowerUnits;
        bindsTo = lowerUnits;
        unitConfig = {
          RequiresMountsFor = [ cfg.lower.storeDir ];
        }
        // systemStoreCondition;
        environment =
          commonEnvironment
          // {
            SNIX_LOWER_STORE_TRUSTED_USERS = lib.concatStringsSep "," cfg.trustedUsers;
          }
          // optionalAttrs (cfg.idleExitAfter != null) {
            SNIX_LOWER_STORE_IDLE_EXIT_AFTER = cfg.idleExitAfter;
          };
        serviceConfig =
          sandbox
          // identity
          // environmentFiles
          // {
            Type = "notify";
            NotifyAccess = "main";
            # The image's index by name: serve would otherwise prefer an
            # index.sqlite left in the state directory by an earlier import.
            ExecStart = "${exe} serve${optionalString imageIndex " ${utils.escapeSystemdExecArgs [
               "--index"
               imageIndexFile
               "--image-check"
               cfg.lower.imageCheck
             ]}"}${optionalString (cfg.extraArgs != [ ]) " ${utils.escapeSystemdExecArgs cfg.extraArgs}"}";
            # SIGTERM: the daemon finishes in-flight requests and exits 0.
            KillMode = "mixed";
            TimeoutStopSec = "30s";
            WatchdogSec = "30s";
            LimitNOFILE = 65536;
          };
      };

      # Waits for the import or the check (so it leaves sockets.target, which
      # comes before their basic.target) and goes when the lower mount goes.
      systemd.sockets.snix-lower-store = {
        description = "snix-lower-store socket (read-only nix-daemon for a local-overlay lower store)";
        documentation = [ "https://github.com/snix-lower-store/snix-lower-store#nixos" ];
        wantedBy = [ "multi-user.target" ];
        requires = [ gateUnit ];
        partOf = [ gateUnit ];
        after = [
          "sysinit.target"
          gateUnit
        ]
        ++ lowerUnits;
        bindsTo = lowerUnits;
        before = [ "shutdown.target" ];
        conflicts = [ "shutdown.target" ];
        unitConfig = {
          DefaultDependencies = false;
        }
        // systemStoreCondition
        // optionalAttrs secondStore {
          # The overlay mount is nofail (not before local-fs.target): wait for
          # it here, so that a listening socket means a mounted merged store.
          RequiresMountsFor = [ cfg.overlay.mountPoint ];
        };
        listenStreams = [ cfg.socket.path ];
        socketConfig = {
          SocketUser = "root";
          SocketGroup = socketGroup;
          SocketMode = cfg.socket.mode;
          DirectoryMode = "0755";
          RemoveOnStop = true;
          Backlog = 1024;
        };
      };

      # After the lower changed, before Nix uses the merged store again
      # (system store: before nix-daemon, which waits for it). Started by
      # multi-user.target and by every start of the gate unit (its Wants=);
      # PartOf= the gate and Requires= the socket and (second store) the
      # overlay mount, so that a restart of the lower mount (a new
      # lower.device on switch: switch-to-configuration restarts an fstab
      # mount whose device changed), of the overlay or of the gate stops it
      # and runs it again after them, on the new lower and the new index.
      # restartIfChanged stays true: a change of its own options (store URL,
      # policy) runs it again, which costs one comparison when the lower is
      # settled. system-store: the lower changes only at boot; the unit runs
      # at every boot.
      systemd.services.${reconcileUnitName} = {
        description = "snix-lower-store: settle Nix's database of the merged store with the lower store mounted now";
        documentation = [ "https://github.com/snix-lower-store/snix-lower-store#nixos" ];
        wantedBy = [ "multi-user.target" ];
        requires = [
          gateUnit
          "snix-lower-store.socket"
        ]
        ++ optional secondStore overlayUnit;
        after = [
          gateUnit
          "snix-lower-store.socket"
        ]
        ++ optional secondStore overlayUnit
        ++ lowerUnits;
        partOf = [ gateUnit ];
        before = optional cfg.configureNix "nix-daemon.service";
        unitConfig = systemStoreCondition;
        # Text on stderr under one identifier, not journald's native
        # protocol: a short-lived process's native entries can lose their
        # unit (journald reads it from /proc after the process is gone), so
        # `journalctl -t snix-lower-store-reconcile` finds every line,
        # including the STORE_PATH= of each path it acts on.
        environment = commonEnvironment // {
          SNIX_LOWER_STORE_LOG_TARGET = "stderr";
        };
        # The shared sandbox but for what root's work here needs: its own
        # home view, file capabilities, no IPC/device/W^X limits Nix's
        # delete would trip over.
        serviceConfig =
          removeAttrs sandbox [
            "ProtectProc"
            "ProcSubset"
            "AmbientCapabilities"
            "MemoryDenyWriteExecute"
            "RemoveIPC"
            "DevicePolicy"
          ]
          // environmentFiles
          // {
            Type = "oneshot";
            RemainAfterExit = true;
            SyslogIdentifier = reconcileUnitName;
            # Root (it writes Nix's database and deletes from the upper
            # layer through the merged store), with only those writable.
            ExecStartPre = "+${coreutil "mkdir"} -p -m 0755 ${
              utils.escapeSystemdExecArgs [
                nixVarDir
                nixStateDir
              ]
            }";
            ExecStart = "${reconcile}";
            # Each command gets its own namespace: "-" lets the one of
            # ExecStartPre (which makes Nix's dirs) start without them, and
            # the one of ExecStart has them writable. The index's directory:
            # SQLite opens a WAL database (the import's) read-only only if
            # it can create its -shm file (as root it gives it the
            # database's owner).
            ReadWritePaths = [
              "-${nixVarDir}"
            ]
            ++ optional (!isUnder nixVarDir nixStateDir) "-${nixStateDir}"
            ++ [
              cfg.overlay.mountPoint
              cfg.overlay.upperDir
            ]
            ++ optional (!imageIndex) cfg.stateDir;
            UMask = "0022";
            ProtectHome = "tmpfs";
            # Root's file access (the index in the daemon's private state
            # directory, store paths of other owners), nothing else.
            CapabilityBoundingSet = [
              "CAP_CHOWN"
              "CAP_DAC_OVERRIDE"
              "CAP_DAC_READ_SEARCH"
              "CAP_FOWNER"
            ];
            SystemCallFilter = [ "@system-service" ];
          };
      };
    }

    (mkIf secondStore {
      fileSystems = secondStoreMounts;
    })

    # In a VM (nixpkgs' qemu-vm.nix: NixOS tests, nixos-rebuild build-vm)
    # fileSystems is replaced by virtualisation.fileSystems (mkVMOverride),
    # so the mounts go there too. They are nofail: a VM without the lower
    # device boots all the same. `options ?` only reads declarations, so it
    # cannot recurse into config. mkDefault per mount point: a node that
    # still copies `mounts` there itself (the way before) replaces them
    # instead of doubling every mount option.
    (lib.optionalAttrs (options ? virtualisation.fileSystems) (
      mkIf secondStore {
        virtualisation.fileSystems = lib.mapAttrs (_: lib.mkDefault) secondStoreMounts;
      }
    ))

    (mkIf secondStore {

      # Upper and work directories, made before the overlay is mounted.
      systemd.services.snix-lower-store-overlay-dirs = {
        description = "snix-lower-store: create the overlay's upper and work directories";
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

    (mkIf systemStore {
      # The lower image and the merged /nix/store are mounted in the initrd
      # by units of the initrd, not by fileSystems entries: stage 2 has no
      # fstab lines for them, so switch-to-configuration never tries to
      # unmount or remount the running store. Changes apply at the next boot.
      # The lower's driver through nixpkgs' file system modules (a type is
      # not always a kernel module name); overlay is no file system type of
      # theirs.
      boot.initrd.supportedFilesystems.${cfg.lower.fsType} = true;
      boot.initrd.availableKernelModules = [ "overlay" ];
      # make-initrd-ng copies these (and the libraries they load), not
      # their Nix closures: the script's shell and every tool it calls.
      boot.initrd.systemd.storePaths = [
        initrdPaths
        pkgs.runtimeShell
        (coreutil "mkdir")
        (coreutil "ln")
        (coreutil "mv")
      ];

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
          ExecStart = "${initrdPaths}";
        };
      };

      boot.initrd.systemd.mounts = [
        {
          description = "snix-lower-store: lower store image";
          what = toString cfg.lower.device;
          where = "/sysroot${cfg.lower.mountPoint}";
          type = cfg.lower.fsType;
          options = lib.concatStringsSep "," cfg.lower.options;
          requiredBy = [ "initrd-fs.target" ];
          before = [ "initrd-fs.target" ];
          unitConfig.RequiresMountsFor = [ "/sysroot" ];
        }
        {
          description = "snix-lower-store: merged /nix/store";
          what = "overlay";
          where = "/sysroot/nix/store";
          type = "overlay";
          options = lib.concatStringsSep "," [
            "lowerdir=${cfg.lower.storeDir}"
            "upperdir=${cfg.overlay.upperDir}"
            "workdir=${cfg.overlay.workDir}"
          ];
          requiredBy = [ "initrd-fs.target" ];
          before = [ "initrd-fs.target" ];
          requires = [
            initrdLowerUnit
            "snix-lower-store-initrd-paths.service"
          ];
          after = [
            initrdLowerUnit
            "snix-lower-store-initrd-paths.service"
          ];
        }
      ];
    })

    (mkIf cfg.configureNix {
      # Clients always go through nix-daemon: a client opening /nix/store as
      # a plain local store would not know the lower paths. In nix.conf, not
      # NIX_CONFIG, so a user's own NIX_CONFIG cannot drop it.
      nix.settings.store = "daemon";

      systemd.services.snix-lower-store-nix-daemon-env = {
        description = "snix-lower-store: nix-daemon's store, once /nix/store is the merged store";
        wantedBy = [ "multi-user.target" ];
        before = [ "nix-daemon.service" ];
        restartTriggers = [ storeUrl ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          RuntimeDirectory = baseNameOf nixDaemonEnvDir;
          RuntimeDirectoryPreserve = true;
          ExecStart = "${nixDaemonEnv}";
        };
      };

      # The reconcile is wanted, not required: if it fails, nix-daemon
      # still starts (a system without Nix cannot be repaired remotely) and
      # the failed unit says why.
      systemd.services.nix-daemon = {
        wants = [
          "snix-lower-store.socket"
          reconcileUnit
        ];
        requires = [ "snix-lower-store-nix-daemon-env.service" ];
        after = [
          "snix-lower-store.socket"
          "snix-lower-store-nix-daemon-env.service"
          reconcileUnit
        ];
        restartTriggers = [ storeUrl ];
        serviceConfig.EnvironmentFile = [ "-${nixDaemonEnvDir}/nix-daemon.env" ];
      };
    })
  ]);

  meta.maintainers = [ ];
}
