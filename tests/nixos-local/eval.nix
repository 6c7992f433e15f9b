# Evaluates the flake's NixOS module in every configuration the project shows
# (the VM test nodes with qemu-vm.nix's fileSystems override, the README's
# NixOS examples, and the cases of ./cases.nix) with nixpkgs' real lib and the
# stand-ins of ./stand-ins.nix, and returns, as JSON-able data:
#   - `configs.<name>`: failed assertions, warnings, rendered unit texts (with
#     nixpkgs' systemd-lib), /etc/fstab lines, /etc files, nix.conf text, and
#     the package's postInstall (to install its own units);
#   - `checks`: [{ name, ok, detail }] from ./checks.nix.
#
#   nix-instantiate --eval --strict --json --read-write-mode eval.nix \
#     --arg repo /path/to/repo --arg nixpkgs /path/to/nixpkgs [--argstr only NAME]
#
# Invariants: nothing from the repository is copied into its tree; README
# examples are evaluated exactly as written (free variables such as
# `snix-lower-store` are given the flake's outputs, relative imports are
# replaced by the stand-in base configuration, and a block that does not
# import the flake's module gets it, as the README's flake example does).
{
  repo,
  nixpkgs,
  readmeBlocks ? [ ],
}:

let
  env = import ./flake-env.nix { inherit repo nixpkgs; };
  inherit (env)
    lib
    si
    system
    pkgs
    self
    evalConfig
    ;

  # Forces what a system build would force; returns either the result or
  # the evaluation error's absence as { ok = false; }.
  summarize =
    eval:
    let
      c = eval.config;
      utils = eval._module.args.utils;
      units = lib.filterAttrs (_: u: u.enable) c.systemd.units;
      initrdUnits = lib.filterAttrs (_: u: u.enable) c.boot.initrd.systemd.units;
      # nix.conf as nixpkgs' nix.nix renders it (environment.etc's source,
      # a writeTextFile whose text the stand-in keeps).
      nixConfFile = c.environment.etc."nix/nix.conf" or null;
      snix = c.services.snix-lower-store or { };
      pkg = snix.package or null;
    in
    {
      failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
      warnings = c.warnings;
      units = lib.mapAttrs (_: u: {
        text = u.text;
        overrideStrategy = u.overrideStrategy;
        wantedBy = u.wantedBy;
        requiredBy = u.requiredBy;
      }) units;
      initrdUnits = lib.mapAttrs (_: u: u.text) initrdUnits;
      # The initrd units' .wants/.requires links (render lays them out).
      initrdUnitLinks = lib.mapAttrs (_: u: { inherit (u) wantedBy requiredBy; }) initrdUnits;
      mountUnitNames = map (fs: "${utils.escapeSystemdPath fs.mountPoint}.mount") (
        lib.attrValues c.fileSystems
      );
      fileSystems = lib.mapAttrs (_: fs: {
        inherit (fs)
          device
          fsType
          options
          neededForBoot
          ;
      }) c.fileSystems;
      # /etc/fstab as nixpkgs' filesystems.nix writes it.
      fstab = c.environment.etc.fstab.text;
      etc = lib.mapAttrs (_: e: e.text) (
        lib.filterAttrs (_: e: e.enable && e.text != null) c.environment.etc
      );
      nixSettings = c.nix.settings;
      nixConf = if c.nix.enable then nixConfFile.source.text else "";
      nixEnable = c.nix.enable;
      variables = c.environment.variables;
      systemdPackages = map (p: p.name) c.systemd.packages;
      # Forced as a system build forces them (an undeclared option in a
      # user's definition fails here).
      users = lib.mapAttrs (_: u: { inherit (u) isNormalUser isSystemUser group; }) c.users.users;
      groups = lib.attrNames c.users.groups;
      vmMemorySize = c.virtualisation.memorySize or null;
      snix = {
        enable = snix.enable or false;
        storeUrl = if snix.enable or false then snix.storeUrl else null;
        lowerMountPoint = snix.lower.mountPoint or null;
        lowerStoreDir = snix.lower.storeDir or null;
        lowerDevice = snix.lower.device or null;
        overlayMountPoint = snix.overlay.mountPoint or null;
        socketPath = snix.socket.path or null;
        placement = snix.placement or null;
      };
      package =
        if pkg == null then
          null
        else
          {
            path = pkg.outPath;
            postInstall = pkg.buildRustPackageArgs.postInstall or "";
          };
    };

  # A configuration: its summary, or the evaluation error (as a failed
  # tryEval; the message is printed by the driver when it re-evaluates it).
  configResult =
    eval:
    let
      s = summarize eval;
      r = builtins.tryEval (builtins.deepSeq s s);
    in
    if r.success then r.value // { evaluates = true; } else { evaluates = false; };

  withSpecialisations =
    name: eval:
    {
      ${name} = eval;
    }
    //
      lib.mapAttrs'
        (
          sname: spec:
          lib.nameValuePair "${name}/specialisation/${sname}" (
            eval.extendModules { modules = [ spec.configuration ]; }
          )
        )
        (
          let
            # A configuration that does not evaluate has no specialisations; its
            # own entry reports the error.
            r = builtins.tryEval (
              builtins.deepSeq (lib.attrNames eval.config.specialisation) eval.config.specialisation
            );
          in
          if r.success then r.value else { }
        );

  # ---------------------------------------------------------- the VM tests
  vmTests = import (repo + "/tests/nixos") { inherit pkgs self; };
  vmNodeEvals = lib.concatMapAttrs (
    test: t:
    lib.concatMapAttrs (
      node: m:
      withSpecialisations "vm-test ${test}/${node}" (evalConfig {
        vm = true;
        modules = [ m ] ++ lib.toList (t.defaults or [ ]);
      })
    ) (t.nodes or { })
  ) vmTests;

  # ------------------------------------------------------ the README blocks
  readmeNixpkgs = {
    lib = lib // {
      nixosSystem = args: args;
    };
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] si.mkPkgs;
  };
  # The packages a README flake example defines (lib.mkLowerImage …), each
  # forced as a build would force it: its name and build command, or null
  # when it does not evaluate.
  readmePackages = lib.listToAttrs (
    lib.concatLists (
      lib.imap1 (
        i: file:
        let
          v = builtins.scopedImport { snix-lower-store = self; } file;
          packages =
            if v ? outputs then
              (v.outputs {
                nixpkgs = readmeNixpkgs;
                snix-lower-store = self;
                self = { };
              }).packages or { }
            else
              { };
        in
        lib.concatLists (
          lib.mapAttrsToList (
            sys: ps:
            lib.mapAttrsToList (
              n: p:
              let
                r = builtins.tryEval (
                  builtins.deepSeq [
                    p.name
                    p.buildCommand
                  ] { inherit (p) name buildCommand; }
                );
              in
              lib.nameValuePair "README block ${toString i}: packages.${sys}.${n}" (
                if r.success then r.value else null
              )
            ) ps
          ) packages
        )
      ) readmeBlocks
    )
  );
  readmeEvals = lib.listToAttrs (
    lib.imap1 (
      i: file:
      let
        v = builtins.scopedImport { snix-lower-store = self; } file;
        stubNixpkgs = readmeNixpkgs;
        modules =
          if v ? outputs then
            lib.concatMap (c: c.modules) (
              lib.attrValues
                (v.outputs {
                  nixpkgs = stubNixpkgs;
                  snix-lower-store = self;
                  self = { };
                }).nixosConfigurations
            )
          else
            [ v ];
      in
      lib.nameValuePair "README block ${toString i}" (evalConfig {
        # A block that does not import the module itself is a snippet of a
        # configuration that does (as the README's flake example shows).
        modules =
          lib.optional (!lib.hasInfix "nixosModules" (builtins.readFile file)) self.nixosModules.default
          ++ lib.filter (m: !builtins.isPath m) modules;
      })
    ) readmeBlocks
  );

  # ------------------------------------------------ the cases of the checks
  cases = import ./cases.nix { inherit lib repo; };
  caseEvals = lib.concatMapAttrs (
    name: c:
    withSpecialisations "case ${name}" (evalConfig {
      vm = c.vm or false;
      modules = [ self.nixosModules.default ] ++ c.modules;
    })
  ) cases;

  allEvals = vmNodeEvals // readmeEvals // caseEvals;
  configs = lib.mapAttrs (_: configResult) allEvals;

  # The package as nix/package.nix defines it, with toSource stood in for so
  # that its file set can be inspected without a store.
  packageArgs =
    let
      lib' = lib // {
        fileset = lib.fileset // {
          toSource = args: args;
        };
      };
    in
    (import (repo + "/nix/package.nix") {
      lib = lib';
      rustPlatform.buildRustPackage = args: args;
    });

  # The flake's image builder (nix/mk-lower-image.nix) through both of its
  # entry points, with the stand-in package set: the derivation each option
  # set gives (null where the function refuses it).
  images =
    let
      mk =
        args:
        self.lib.mkLowerImage (
          {
            inherit pkgs;
            rootPaths = [ pkgs.busybox ];
          }
          // args
        );
      summary = img: {
        inherit (img) name buildCommand;
        nativeBuildInputs = map (p: p.name) img.env.nativeBuildInputs;
        format = img.env.passthru.format;
        closureInfoRoots = map (p: p.name) img.env.passthru.closureInfo.rootPaths;
      };
      try =
        v:
        let
          r = builtins.tryEval (builtins.deepSeq v v);
        in
        if r.success then r.value else null;
    in
    {
      default = try (summary (mk { }));
      directory = try (
        summary (mk {
          format = "directory";
        })
      );
      options = try (
        summary (mk {
          dedupe = false;
          label = "lowerstore";
          extraMkfsArgs = [ "-b4096" ];
        })
      );
      uncompressed = try (
        summary (mk {
          compression = null;
        })
      );
      bad-format = try (
        summary (mk {
          format = "squashfs";
        })
      );
      long-label = try (
        summary (mk {
          label = "a-label-of-sixteen";
        })
      );
      no-roots = try (
        summary (mk {
          rootPaths = [ ];
        })
      );
      via-package = try (
        summary (self.packages.${system}.snix-lower-store.mkLowerImage { rootPaths = [ pkgs.busybox ]; })
      );
    };

  checks = import ./checks.nix {
    inherit
      lib
      repo
      configs
      packageArgs
      images
      readmePackages
      ;
  };
in
{
  json = {
    # Each VM test's script after Nix interpolation and its node names, for
    # tests/vm-scripts/check.py (the nodes' units are in `configs`).
    vmScripts = lib.mapAttrs (test: t: {
      nodes = lib.attrNames (t.nodes or { });
      # null when it does not evaluate (the check says so).
      script =
        let
          s =
            if lib.isFunction t.testScript then
              t.testScript { nodes = lib.mapAttrs (node: _: allEvals."vm-test ${test}/${node}".config) t.nodes; }
            else
              t.testScript;
          r = builtins.tryEval (builtins.deepSeq s s);
        in
        if r.success then r.value else null;
    }) vmTests;
    misspelt = lib.mapAttrs' (n: c: lib.nameValuePair "case ${n}" c.misspelt) (
      lib.filterAttrs (_: c: c ? misspelt) cases
    );
    inherit
      configs
      checks
      images
      readmePackages
      ;
  };
  # Forces one configuration without tryEval, so that its error is shown.
  explain = name: builtins.deepSeq (summarize allEvals.${name}) "evaluates";
}
