# What must hold of the evaluated configurations (./eval.nix): one
# { name, ok, detail } per claim. Names start with the number of the failure
# in issue 12 they guard ("1".."10"), or with what they judge.
#
# Invariant: every check can fail; a configuration that does not evaluate
# fails every check that reads it.
{
  lib,
  repo,
  configs,
  packageArgs,
  images,
  readmePackages,
}:

let
  check = name: ok: detail: { inherit name ok detail; };
  # The cases that set a misspelt option: name -> the option.
  misspelt = lib.mapAttrs' (n: c: lib.nameValuePair "case ${n}" c.misspelt) (
    lib.filterAttrs (_: c: c ? misspelt) (import ./cases.nix { inherit lib repo; })
  );
  get = name: configs.${name} or { evaluates = false; };
  evaluated = c: c.evaluates or false;

  unitText = c: name: c.units.${name}.text or "";
  lines = text: lib.filter (l: l != "") (lib.splitString "\n" text);
  # Values of `Key=` in a unit text, space-separated lists split.
  values =
    key: text:
    lib.concatMap (
      l:
      let
        m = builtins.match "${key}=(.*)" l;
      in
      if m == null then [ ] else lib.filter (v: v != "") (lib.splitString " " (lib.head m))
    ) (lines text);

  snixConfigs = lib.filterAttrs (_: c: evaluated c && c.snix.enable) configs;

  # 1. The package's source set holds every workspace member's manifest.
  members = (lib.importTOML (repo + "/Cargo.toml")).workspace.members;
  srcFiles = map toString (lib.fileset.toList packageArgs.src.fileset);
  missingMembers = lib.filter (m: !lib.elem "${toString repo}/${m}/Cargo.toml" srcFiles) members;

  # 2. Every mount unit a unit Requires=/BindsTo= is declared.
  undeclaredMounts =
    c:
    let
      declared = c.mountUnitNames ++ lib.filter (lib.hasSuffix ".mount") (lib.attrNames c.units);
      needed = lib.unique (
        lib.concatMap (
          u: lib.filter (lib.hasSuffix ".mount") (values "Requires" u.text ++ values "BindsTo" u.text)
        ) (lib.attrValues c.units)
      );
    in
    lib.filter (m: !lib.elem m declared) needed;

  vmNodes = lib.filterAttrs (n: _: lib.hasPrefix "vm-test " n) configs;
  readme = lib.filterAttrs (n: _: lib.hasPrefix "README " n) configs;

  second = get "case second-store";
  importUnit = "snix-lower-store-import.service";

  hasMessage = needle: c: lib.any (lib.hasInfix needle) (c.failedAssertions or [ ]);

  # The experimental features nix.conf turns on, read from its rendered text
  # (the module adds its own through nix.extraOptions, not nix.settings).
  expFeatures =
    conf:
    lib.concatMap (
      l:
      let
        m = builtins.match " *(extra-)?experimental-features *= *(.*)" l;
      in
      if m == null then [ ] else lib.filter (f: f != "") (lib.splitString " " (lib.elemAt m 1))
    ) (lib.splitString "\n" conf);
in
[
  (check "1 nix/package.nix's source set holds every workspace member (${toString members})" (
    missingMembers == [ ]
  ) "missing from lib.fileset.unions: ${toString missingMembers}")
]
# Every configuration evaluates (the cases, the VM nodes, the README), but
# those with a misspelt option, which must not.
++ lib.mapAttrsToList (
  n: c:
  if misspelt ? ${n} then
    check "typed: ${n} (${misspelt.${n}}) does not evaluate" (
      !evaluated c
    ) "it evaluates: the option is not typed as nixpkgs declares it"
  else
    check "evaluates: ${n}" (evaluated c) "evaluation failed (the driver prints the error)"
) configs
++ lib.mapAttrsToList (
  n: c:
  if c.snix.placement == "system-store" then
    check "2 ${n}: the merged /nix/store is mounted in the systemd initrd, not by fileSystems" (
      c.initrdUnits ? "sysroot-nix-store.mount"
      && !(c.fileSystems ? "/nix/store" && c.fileSystems."/nix/store".fsType == "overlay")
    ) "initrd units: ${toString (lib.attrNames c.initrdUnits)}"
  else
    check "2 ${n}: the lower and overlay mounts are in fileSystems" (
      (c.snix.lowerDevice == null || c.fileSystems ? ${c.snix.lowerMountPoint})
      && c.fileSystems ? ${c.snix.overlayMountPoint}
    ) "fileSystems has: ${toString (lib.attrNames (c.fileSystems or { }))}"
) (lib.filterAttrs (_: c: evaluated c && c.snix.enable) (vmNodes // readme))
++ lib.mapAttrsToList (
  n: c:
  check "2 ${n}: every mount unit a unit requires or binds to is declared" (
    undeclaredMounts c == [ ]
  ) "not declared by fileSystems or systemd.mounts: ${toString (undeclaredMounts c)}"
) snixConfigs
++ lib.mapAttrsToList (
  n: c:
  check "${n}: no failed assertion" (evaluated c && c.failedAssertions == [ ]) (
    lib.concatStringsSep "; " (c.failedAssertions or [ ])
  )
) (vmNodes // readme)
++ [
  (
    let
      c = get "case enable-alone";
    in
    check
      "3 enable = true alone: refused by an assertion that says what is missing, /nix/store left alone"
      (evaluated c && hasMessage "lower.device is not set" c && !(c.fileSystems ? "/nix/store"))
      "assertions: ${toString (c.failedAssertions or [ ])}; fileSystems: ${
        toString (lib.attrNames (c.fileSystems or { }))
      }"
  )
  (
    let
      c = get "case enable-alone-systemd-initrd";
      stage1 = lib.filterAttrs (_: fs: fs.neededForBoot || lib.elem "x-initrd.mount" fs.options) (
        c.fileSystems or { }
      );
    in
    check
      "3 enable = true alone with boot.initrd.systemd.enable: refused for the missing lower.device, no boot-critical mount over an empty lower directory"
      (
        evaluated c
        && hasMessage "lower.device is not set" c
        && !(stage1 ? "/nix/store")
        && !(c.initrdUnits ? "sysroot-nix-store.mount")
      )
      "assertions: ${
        toString (c.failedAssertions or [ ])
      }; stage-1 mounts: ${toString (lib.attrNames stage1)}"
  )
  (
    # With a device, nothing else fails first: the second store (the default
    # placement) must then put none of its mounts in stage 1 and leave
    # /nix/store alone.
    let
      c = get "case second-store-systemd-initrd";
      stage1 = lib.filterAttrs (_: fs: fs.neededForBoot || lib.elem "x-initrd.mount" fs.options) (
        c.fileSystems or { }
      );
      own = lib.filterAttrs (n: _: lib.hasPrefix "/var/lib/snix-overlay" n) stage1;
    in
    check
      "3 second store with boot.initrd.systemd.enable: accepted, none of its mounts in stage 1, /nix/store and the initrd untouched"
      (
        evaluated c
        && c.failedAssertions == [ ]
        && c.fileSystems ? "/var/lib/snix-overlay/nix/store"
        && own == { }
        && !(stage1 ? "/nix/store")
        && !(c.fileSystems ? "/nix/store")
        && !(c.initrdUnits ? "sysroot-nix-store.mount")
      )
      "assertions: ${
        toString (c.failedAssertions or [ ])
      }; stage-1 mounts: ${toString (lib.attrNames stage1)}; initrd units: ${
        toString (lib.attrNames (c.initrdUnits or { }))
      }"
  )
  (
    let
      c = get "case system-store-without-initrd";
    in
    check "3 system-store without boot.initrd.systemd.enable is refused with its message" (
      evaluated c && hasMessage "needs boot.initrd.systemd.enable = true" c
    ) "assertions: ${toString (c.failedAssertions or [ ])}"
  )
  (
    let
      c = get "case system-store-without-device";
    in
    check "3 system-store without a lower device is refused with its message" (
      evaluated c
      && (
        hasMessage "needs lower.mount = true and lower.device" c || hasMessage "lower.device is not set" c
      )
    ) "assertions: ${toString (c.failedAssertions or [ ])}"
  )
  (
    let
      c = get "case system-store";
    in
    check
      "3 system-store: accepted, /nix/store mounted in the systemd initrd over the lower mount, not by fstab"
      (
        evaluated c
        && c.failedAssertions == [ ]
        && c.initrdUnits ? "sysroot-nix-store.mount"
        && lib.hasInfix "lowerdir=/nix/.snix-lower/nix/store" (
          c.initrdUnits."sysroot-nix-store.mount" or ""
        )
        && !(c.fileSystems ? "/nix/store")
      )
      "assertions: ${toString (c.failedAssertions or [ ])}; initrd units: ${
        toString (lib.attrNames (c.initrdUnits or { }))
      }"
  )
  (
    let
      c = get "case user-experimental-string";
    in
    check "4 nix.settings.experimental-features given as a string merges with the module's" (
      evaluated c
      && lib.elem "local-overlay-store" (expFeatures c.nixConf)
      && lib.elem "flakes" (expFeatures c.nixConf)
    ) "nix.settings: ${builtins.toJSON (c.nixSettings or null)}"
  )
  (
    let
      c = get "case user-extra-experimental-string";
    in
    check
      "4 nix.settings.extra-experimental-features given as a string merges with the module's (nixpkgs' nix.nix type)"
      (
        evaluated c
        && lib.elem "local-overlay-store" (expFeatures c.nixConf)
        && lib.elem "flakes" (expFeatures c.nixConf)
      )
      "nix.settings: ${
        builtins.toJSON (c.nixSettings or null)
      } (the module's list and a string cannot merge in `either confAtom (listOf confAtom)`)"
  )
  (
    let
      c = get "case registration-path";
      t = unitText c importUnit;
    in
    check "5 registrations given as Nix paths are copied into the store" (
      evaluated c && lib.hasInfix "-example-registration" t && !lib.hasInfix (toString repo) t
    ) "import unit ExecStart: ${toString (lib.filter (lib.hasPrefix "ExecStart=") (lines t))}"
  )
]
++
  map
    (
      what:
      let
        c = get "case socket-${what}-changed";
        changed = u: unitText c u != unitText second u;
        socket = unitText c "snix-lower-store.socket";
        followsImport = lib.elem importUnit (values "PartOf" socket);
      in
      check
        "6 a change of socket.${what} alone changes a unit switch-to-configuration restarts, and the socket follows it"
        (
          evaluated c
          && evaluated second
          && (changed "snix-lower-store.service" || (changed importUnit && followsImport))
        )
        "service changed: ${lib.boolToString (changed "snix-lower-store.service")}, import changed: ${lib.boolToString (changed importUnit)}, socket PartOf= the import: ${lib.boolToString followsImport}"
    )
    [
      "mode"
      "group"
      "path"
    ]
++ [
  (
    let
      c = get "case socket-path-changed";
    in
    check "6 a new socket.path reaches /etc/snix-lower-store/store-url and the socket unit" (
      evaluated c
      && lib.hasInfix "unix%3A///run/snix-other/socket" (c.etc."snix-lower-store/store-url" or "")
      && lib.elem "/run/snix-other/socket" (values "ListenStream" (unitText c "snix-lower-store.socket"))
    ) "store-url: ${c.etc."snix-lower-store/store-url" or "(none)"}"
  )
  (
    let
      t = unitText second importUnit;
    in
    check
      "7 the import unit (oneshot) lets its ExecStart= send STATUS=, so systemctl status shows the import's progress"
      (evaluated second && values "Type" t == [ "oneshot" ] && values "NotifyAccess" t == [ "main" ])
      "Type=${toString (values "Type" t)} NotifyAccess=${toString (values "NotifyAccess" t)}"
  )
  (
    let
      t = unitText second importUnit;
      bound = lib.filter (lib.hasSuffix ".mount") (values "BindsTo" t ++ values "PartOf" t);
    in
    check "7 the import unit is bound to the lower mount (re-run when it is mounted again)" (
      evaluated second && lib.any (m: lib.hasInfix "snix\\x2doverlay-lower.mount" m) bound
    ) "BindsTo=/PartOf= mounts of the import unit: ${toString bound}"
  )
  (
    let
      t = unitText second "snix-lower-store.socket";
      overlayUnit = "var-lib-snix\\x2doverlay-nix-store.mount";
      required = values "Requires" t ++ values "BindsTo" t;
    in
    check "8 second store: the socket requires and follows the overlay mount"
      (
        evaluated second
        && (
          lib.elem overlayUnit required
          || lib.elem "/var/lib/snix-overlay/nix/store" (values "RequiresMountsFor" t)
        )
        && (
          lib.elem overlayUnit (values "After" t)
          || lib.elem "/var/lib/snix-overlay/nix/store" (values "RequiresMountsFor" t)
        )
      )
      "socket unit: ${
        toString (
          lib.filter (l: builtins.match "(Requires|BindsTo|After|RequiresMountsFor)=.*" l != null) (lines t)
        )
      }"
  )
  (
    let
      c = get "case nix-enable-second-store";
    in
    check
      "10 making a second store Nix's default store (the old nix.enable name) is refused by the configureNix assertion, with the rename warned about"
      (
        evaluated c
        && hasMessage "configureNix = true with placement = \"second-store\"" c
        && lib.any (lib.hasInfix "services.snix-lower-store.configureNix") (c.warnings or [ ])
      )
      "assertions: ${toString (c.failedAssertions or [ ])}; warnings: ${toString (c.warnings or [ ])}"
  )
  (
    let
      c = get "case configure-nix-second-store";
    in
    check "10 configureNix with a second store is refused by an assertion" (
      evaluated c && hasMessage "configureNix = true with placement" c
    ) "assertions: ${toString (c.failedAssertions or [ ])}; warnings: ${toString (c.warnings or [ ])}"
  )
  (
    let
      c = get "case user-nix-config";
      v = toString (c.variables.NIX_CONFIG or "");
    in
    check "10 a user's NIX_CONFIG does not silently drop the module's store = daemon"
      (
        evaluated c
        && c.failedAssertions == [ ]
        && (
          lib.hasInfix "store = daemon" v
          || ((c.nixSettings.store or null) == "daemon" && !lib.hasInfix "store" v)
        )
      )
      "NIX_CONFIG = ${v}; nix.settings.store = ${
        toString (c.nixSettings.store or "(unset)")
      }; assertions: ${toString (c.failedAssertions or [ ])}"
  )
]
++
  map
    (
      name:
      let
        c = get "case ${name}";
        service = unitText c "snix-lower-store.service";
        socket = unitText c "snix-lower-store.socket";
        check' = unitText c "snix-lower-store-check.service";
        meta = "${c.snix.lowerMountPoint or "(none)"}/.snix-lower-store";
        # escapeSystemdExecArgs quotes each argument.
        start = builtins.replaceStrings [ "\"" ] [ "" ] (
          lib.concatStringsSep " " (values "ExecStart" service)
        );
        socketDeps = values "Requires" socket ++ values "After" socket ++ values "PartOf" socket;
      in
      check
        "14 ${name}: lower.index = \"image\": no import unit, serve --index <image root>/.snix-lower-store/index, the socket waits for the check only, no state directory"
        (
          evaluated c
          && c.failedAssertions == [ ]
          && !(c.units ? ${importUnit})
          && c.units ? "snix-lower-store-check.service"
          && lib.hasInfix "serve --index ${meta}/index --image-check " start
          && !(lib.elem importUnit socketDeps)
          && lib.elem "snix-lower-store-check.service" (values "Requires" socket)
          && values "StateDirectory" service == [ ]
          && values "StateDirectory" check' == [ ]
          && !lib.hasInfix " import " check'
        )
        "assertions: ${toString (c.failedAssertions or [ ])}; units: ${
          toString (lib.attrNames (c.units or { }))
        }; ExecStart: ${start}; socket deps: ${toString socketDeps}; StateDirectory: ${toString (values "StateDirectory" service)}"
    )
    [
      "second-store-image"
      "system-store-image"
      "second-store-bind-image"
      "image-check-full"
    ]
++ [
  (
    let
      c = get "case second-store-image";
    in
    check
      "14 image mode: the lower dir is <mount>/nix/store, where mkLowerImage puts the store paths, with the index outside it"
      (evaluated c && c.snix.lowerStoreDir == "${c.snix.lowerMountPoint}/nix/store")
      "lower.storeDir = ${toString (c.snix.lowerStoreDir or null)}, lower.mountPoint = ${
        toString (c.snix.lowerMountPoint or null)
      }"
  )
  (check "14 README: every package a flake example defines evaluates (lib.mkLowerImage)" (
    readmePackages != { }
    && lib.all (p: p != null) (lib.attrValues readmePackages)
    && lib.any (p: p != null && lib.hasInfix "build-index" p.buildCommand) (
      lib.attrValues readmePackages
    )
  ) "README packages: ${builtins.toJSON readmePackages}")
  (
    let
      c = get "vm-test image/machine";
      i = get "vm-test image/machine/specialisation/imported";
    in
    check
      "14 vm-test image: the node serves the image's own index; its specialisation imports the image's registration over the same lowerdir"
      (
        evaluated c
        && evaluated i
        && !(c.units ? ${importUnit})
        && c.units ? "snix-lower-store-check.service"
        && i.units ? ${importUnit}
        && !(i.units ? "snix-lower-store-check.service")
        && lib.hasInfix "/var/lib/snix-overlay/lower/.snix-lower-store/registration" (unitText i importUnit)
        && c.fileSystems == i.fileSystems
      )
      "image node units: ${toString (lib.attrNames (c.units or { }))}; imported: ${
        toString (lib.attrNames (i.units or { }))
      }"
  )
  (
    let
      c = get "case image-check-full";
      start = builtins.replaceStrings [ "\"" ] [ "" ] (
        lib.concatStringsSep " " (values "ExecStart" (unitText c "snix-lower-store.service"))
      );
    in
    check "14 lower.imageCheck = \"full\" reaches serve" (
      evaluated c && lib.hasInfix "--image-check full" start
    ) "ExecStart: ${start}"
  )
  (
    let
      c = get "case image-store-top";
    in
    check
      "14 lower.index = \"image\" with a lower.storeDir that has no image root is refused with its message"
      (evaluated c && hasMessage "lower.storeDir must end in /nix/store" c)
      "assertions: ${toString (c.failedAssertions or [ ])}"
  )
  (
    let
      c = get "case image-with-registrations";
    in
    check "14 lower.index = \"image\" with registrations is refused with its message" (
      evaluated c && hasMessage "lower.index = \"image\" serves the index inside the image" c
    ) "assertions: ${toString (c.failedAssertions or [ ])}"
  )
  (
    let
      t = unitText second "snix-lower-store.service";
    in
    check
      "14 import mode (the default) keeps the import unit, its state directory and serve without --index"
      (
        evaluated second
        && second.units ? ${importUnit}
        && !(second.units ? "snix-lower-store-check.service")
        && values "StateDirectory" t == [ "snix-lower-store" ]
        && !lib.hasInfix "--index" t
      )
      "units: ${toString (lib.attrNames (second.units or { }))}"
  )
  (
    let
      i = images.default;
      cmd = if i == null then "" else i.buildCommand;
    in
    check
      "14 mkLowerImage (lib.mkLowerImage): closureInfo of rootPaths, build-index --registration in the image, mkfs.erofs with the store options"
      (
        i != null
        && i.format == "erofs"
        && lib.hasSuffix ".erofs" i.name
        && i.closureInfoRoots == [ "busybox-stand-in" ]
        && lib.elem "erofs-utils-stand-in" i.nativeBuildInputs
        && lib.elem "snix-lower-store-0.1.0" i.nativeBuildInputs
        && lib.hasInfix "store=\"$root\"/nix/store" cmd
        && lib.hasInfix "snix-lower-store build-index --store-dir /nix/store" cmd
        && lib.hasInfix "--lower-dir \"$store\" --registration \"$meta/registration\"" cmd
        && lib.hasInfix "test -s \"$meta/index\" && test -s \"$meta/id\"" cmd
        && lib.hasInfix "mkfs.erofs --quiet --all-root -T1 -zlz4hc,12 -Eztailpacking,dedupe -U" cmd
      )
      "image: ${builtins.toJSON i}"
  )
  (
    let
      i = images.directory;
    in
    check "14 mkLowerImage format = \"directory\": the tree is the output, no mkfs.erofs" (
      i != null
      && i.format == "directory"
      && !lib.hasInfix "mkfs.erofs" i.buildCommand
      && lib.hasInfix "root=$out" i.buildCommand
    ) "image: ${builtins.toJSON i}"
  )
  (
    let
      o = images.options;
      u = images.uncompressed;
    in
    check "14 mkLowerImage options: dedupe off, label, extra args, no compression" (
      o != null
      && lib.hasInfix "-Eztailpacking -L lowerstore -b4096 -U" o.buildCommand
      && u != null
      && lib.hasInfix "mkfs.erofs --quiet --all-root -T1 -U" u.buildCommand
    ) "options: ${builtins.toJSON o}; uncompressed: ${builtins.toJSON u}"
  )
  (check "14 mkLowerImage refuses an unknown format, a label over 15 bytes and empty rootPaths"
    (images.bad-format == null && images.long-label == null && images.no-roots == null)
    "bad-format: ${builtins.toJSON images.bad-format}; long-label: ${builtins.toJSON images.long-label}; no-roots: ${builtins.toJSON images.no-roots}"
  )
  (
    let
      i = images.via-package;
    in
    check
      "14 the package's passthru.mkLowerImage (the overlay's pkgs.snix-lower-store.mkLowerImage) is the same function"
      (i != null && i == images.default)
      "via package: ${builtins.toJSON i}"
  )
]
