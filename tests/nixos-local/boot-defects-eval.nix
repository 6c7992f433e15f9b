# Evaluation checks of issue 21 part 3 (boot and evaluation defects), with
# nixpkgs' real lib and the stand-ins of ./stand-ins.nix:
#   - a test VM as a user writes it (module, enable, lower.device; no
#     `virtualisation.fileSystems` line) gets the second-store mounts with
#     nixpkgs' real qemu-vm.nix (./stand-ins.nix's vmModules), each mount
#     option once, also when the node still copies `mounts` there itself; a
#     system without qemu-vm.nix evaluates too;
#   - lower.deviceTimeout: applied to /dev paths and LABEL=/UUID= tags,
#     a warning naming it when set for anything else or with the
#     system-store placement, no warning at its default;
#   - the store URL of a socket path with space, '?', '%' and '#': the
#     socket path percent-encoded (nixos-modules/store-url.nix and the
#     module's storeUrl option).
# Returns [ { name; ok; detail; } ]; tests/nixos-local/boot-defects-check
# prints them.
#
#   nix-instantiate --eval --strict --json boot-defects-eval.nix \
#     --arg repo /path/to/repo --arg nixpkgs /path/to/nixpkgs
#
# Invariant: the module system's checks stay on (no _module.check = false).
{
  repo,
  nixpkgs,
}:

let
  env = import ./flake-env.nix { inherit repo nixpkgs; };
  inherit (env) lib si self;
  urlLib = import (repo + "/nixos-modules/store-url.nix");

  eval = modules: (env.evalConfig { modules = [ self.nixosModules.default ] ++ modules; }).config;

  second = extra: {
    services.snix-lower-store = lib.recursiveUpdate {
      enable = true;
      lower.device = "/dev/disk/by-id/virtio-snixlower";
    } extra;
  };
  systemStore = {
    boot.initrd.systemd.enable = true;
    services.snix-lower-store = {
      enable = true;
      placement = "system-store";
      lower.device = "LABEL=lower-store";
      registrations = [ "/nix/.snix-lower/registration" ];
    };
  };

  check = name: ok: detail: { inherit name ok detail; };
  try =
    v:
    let
      r = builtins.tryEval (builtins.deepSeq v v);
    in
    if r.success then r.value else null;

  lowerAt = "/var/lib/snix-overlay/lower";
  storeAt = "/var/lib/snix-overlay/nix/store";
  vm = try (eval (si.vmModules nixpkgs ++ [ (second { }) ])).fileSystems;
  # filesystems.nix turns `depends` into x-systemd.requires-mounts-for=
  # options; qemu-vm.nix's override feeds those back through the same type,
  # so they appear twice in any VM (systemd reads them as one). Every other
  # option must appear once.
  dups =
    l:
    let
      own = lib.filter (o: !lib.hasPrefix "x-systemd.requires-mounts-for=" o) l;
    in
    lib.length own != lib.length (lib.unique own);
  # Both mounts there, each of their options once.
  mountsOnce =
    fs:
    fs != null
    && fs ? ${lowerAt}
    && fs ? ${storeAt}
    && !(dups fs.${lowerAt}.options)
    && !(dups fs.${storeAt}.options);
  mountOptions =
    fs:
    builtins.toJSON (
      if fs == null then
        null
      else
        map (m: fs.${m}.options or null) [
          lowerAt
          storeAt
        ]
    );
  plain = try (eval [ (second { }) ]).fileSystems;
  # A node that still copies the mounts itself, as the VM tests did before.
  copied =
    try
      (eval (
        si.vmModules nixpkgs
        ++ [
          (second { })
          (
            { config, ... }:
            {
              virtualisation.fileSystems = config.services.snix-lower-store.mounts;
            }
          )
        ]
      )).fileSystems;

  fsOptions = c: c.fileSystems.${lowerAt}.options;
  hasTimeout = c: lib.any (lib.hasPrefix "x-systemd.device-timeout=") (fsOptions c);
  warnsTimeout = c: lib.any (lib.hasInfix "services.snix-lower-store.lower.deviceTimeout") c.warnings;
  virtiofs =
    extra:
    lib.recursiveUpdate {
      lower.device = "snixlower";
      lower.fsType = "virtiofs";
    } extra;
  timeoutCase =
    name: modules: expectTimeout: expectWarning:
    let
      c = try (
        let
          cfg = eval modules;
        in
        {
          timeout = if cfg.fileSystems ? ${lowerAt} then hasTimeout cfg else null;
          warned = warnsTimeout cfg;
          inherit (cfg) warnings;
          options = if cfg.fileSystems ? ${lowerAt} then fsOptions cfg else [ ];
        }
      );
    in
    check
      "3 lower.deviceTimeout, ${name}: ${
        if expectTimeout == null then
          ""
        else if expectTimeout then
          "x-systemd.device-timeout= set, "
        else
          "no x-systemd.device-timeout=, "
      }${if expectWarning then "a warning naming the option" else "no warning"}"
      (c != null && c.timeout == expectTimeout && c.warned == expectWarning)
      (builtins.toJSON c);

  socket = "/run/a b?c%d#e/sock";
  url = urlLib.lowerStoreUrl {
    inherit socket;
    lowerDir = "/srv/lower/nix/store";
  };
  wantSocket = "unix:///run/a%20b%3Fc%25d%23e/sock?real=";
  wantUrl = "${wantSocket}/srv/lower/nix/store";
  oddSocket = try (
    let
      c = eval [ (second { socket.path = socket; }) ];
    in
    {
      inherit (c.services.snix-lower-store) storeUrl;
      inherit (c) warnings;
    }
  );
  moduleUrl = if oddSocket == null then null else oddSocket.storeUrl;
  plainWarnings = try (eval [ (second { }) ]).warnings;
in
[
  (check
    "6 a VM node without a virtualisation.fileSystems line gets the lower and overlay mounts (qemu-vm.nix's declaration and mkVMOverride)"
    (vm != null && vm ? ${lowerAt} && vm ? ${storeAt} && vm ? "/")
    "fileSystems: ${builtins.toJSON (if vm == null then null else lib.attrNames vm)}"
  )
  (check
    "6 ... each of their mount options once (but filesystems.nix's requires-mounts-for, doubled by qemu-vm.nix's override in any VM)"
    (mountsOnce vm)
    (mountOptions vm)
  )
  (check
    "6 a VM node that still copies mounts into virtualisation.fileSystems: the mounts once, each option once"
    (mountsOnce copied)
    (mountOptions copied)
  )
  (check "6 a system without virtualisation.fileSystems evaluates and has the mounts in fileSystems" (
    plain != null && plain ? ${lowerAt} && plain ? ${storeAt}
  ) (builtins.toJSON (if plain == null then null else lib.attrNames plain)))
  (timeoutCase "a /dev path" [ (second { }) ] true false)
  (timeoutCase "LABEL=" [ (second { lower.device = "LABEL=lower-store"; }) ] true false)
  (timeoutCase "UUID= set to 10s" [
    (second {
      lower.device = "UUID=0123-4567";
      lower.deviceTimeout = "10s";
    })
  ] true false)
  (timeoutCase "a virtiofs tag, at its default" [ (second (virtiofs { })) ] false false)
  (timeoutCase "a virtiofs tag, set to 10s" [
    (second (virtiofs {
      lower.deviceTimeout = "10s";
    }))
  ] false true)
  (timeoutCase "system-store, at its default" [ systemStore ] null false)
  (timeoutCase "system-store, set to 10s" [
    systemStore
    { services.snix-lower-store.lower.deviceTimeout = "10s"; }
  ] null true)
  (check "4 store-url.nix: a socket path with space, ?, % and # is percent-encoded in unix://" (
    url == wantUrl
  ) "got ${url}, want ${wantUrl}")
  (check "4 the module's storeUrl carries the encoded socket path (encoded once more as lower-store=)"
    (moduleUrl != null && lib.hasInfix "lower-store=${urlLib.percentEncode wantSocket}" moduleUrl)
    "storeUrl: ${toString moduleUrl}"
  )
  (check
    "4 such a socket path gives a warning naming socket.path (Nix 2.26 cannot open the nested URL); a plain one none"
    (
      oddSocket != null
      && lib.any (w: lib.hasInfix socket w && lib.hasInfix "socket.path" w) oddSocket.warnings
      && plainWarnings == [ ]
    )
    "warnings: ${
      builtins.toJSON [
        (if oddSocket == null then null else oddSocket.warnings)
        plainWarnings
      ]
    }"
  )
]
