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
    in
    {
      overlays.default = final: _prev: {
        snix-lower-store = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: {
        snix-lower-store = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.snix-lower-store;
      });

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
        # system-store.
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

      # nixfmt is the RFC 166 style formatter (what nixfmt-rfc-style was).
      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
