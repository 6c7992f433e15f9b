{
  description = "snix-lower-store: a read-only nix-daemon serving the lower layer of Nix's local-overlay store";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The package, with mkLowerImage (./nix/mk-lower-image.nix) bound to it
      # as `passthru.mkLowerImage`.
      withImageFunction =
        pkgs: package:
        package.overrideAttrs (old: {
          passthru = (old.passthru or { }) // {
            mkLowerImage = pkgs.callPackage ./nix/mk-lower-image.nix { snix-lower-store = package; };
          };
        });
    in
    {
      overlays.default = final: _prev: {
        snix-lower-store = withImageFunction final (final.callPackage ./nix/package.nix { });
      };

      packages = forAllSystems (pkgs: {
        snix-lower-store = withImageFunction pkgs (pkgs.callPackage ./nix/package.nix { });
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store;
      });

      # A lower image carrying its own index, from the closure of rootPaths:
      #   snix-lower-store.lib.mkLowerImage { inherit pkgs; rootPaths = [ pkgs.hello ]; }
      # with pkgs' closureInfo and erofs-utils and this flake's package for
      # pkgs' system (or `package`); with the overlay the same function is
      # pkgs.snix-lower-store.mkLowerImage { … }. Options: nix/mk-lower-image.nix.
      lib.mkLowerImage =
        {
          pkgs,
          package ? self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store,
          ...
        }@args:
        pkgs.callPackage ./nix/mk-lower-image.nix { snix-lower-store = package; } (
          removeAttrs args [
            "pkgs"
            "package"
          ]
        );

      nixosModules = {
        snix-lower-store =
          { lib, pkgs, ... }:
          {
            imports = [ ./nixos-modules/snix-lower-store.nix ];
            services.snix-lower-store.package =
              lib.mkDefault
                self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store;
          };
        default = self.nixosModules.snix-lower-store;
      };

      checks = forAllSystems (
        pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
        in
        # VM tests: basic, socket-activation, switch, lower-missing, fixed,
        # system-store, system-store-image, image.
        import ./tests/nixos { inherit pkgs self; }
        // {
          # The package's checkPhase runs the daemon's cargo tests.
          package = self.packages.${system}.snix-lower-store;
          module-eval = import ./tests/module-eval.nix { inherit pkgs self nixpkgs; };
          devShell = self.devShells.${system}.default;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store ];
          packages = [
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.erofs-utils
            pkgs.squashfsTools
            pkgs.nixfmt
          ];
        };
      });

      # nixfmt is the RFC 166 style formatter (what nixfmt-rfc-style was);
      # 1.4.0 at the locked nixpkgs, the version scripts/nixfmt builds.
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
