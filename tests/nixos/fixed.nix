# Regressions of the failures listed in issue 12 that a running VM shows
# (the others are in switch.nix, system-store.nix and tests/module-eval.nix):
#   4. experimental-features written as a string still evaluates and gains
#      local-overlay-store (the module uses extra-experimental-features);
#   5. a registration given as a Nix path value (a file of this repository,
#      a registration of no paths) is copied into the store, is in the
#      system closure and is imported; with `toString` it would stay a path
#      into the flake's source, outside the closure;
#   7. restarting the lower mount re-runs the import, the socket follows;
#   8. the socket requires the (nofail) overlay mount: stopping the overlay
#      stops the socket, starting the socket mounts the overlay;
#   9. the units are the module's own: no /srv/lower, no
#      /etc/snix-lower-store/env; environmentFile is read.
{ pkgs, common }:

let
  # A path value: the module must copy it ("${p}"), which is what this
  # string is too.
  registration = ./fixtures/no-paths.registration;
  registrationInStore = "${registration}";
  # systemd's names of the two mounts (`systemd-escape -p --suffix=mount`).
  # They contain a backslash: they reach the Python script as JSON string
  # literals (valid Python), never spliced into a Python string, where
  # `\x2d` would be read as an escape for "-" (issue 21).
  overlayUnit = "var-lib-snix\\x2doverlay-nix-store.mount";
  lowerUnit = "var-lib-snix\\x2doverlay-lower.mount";
in
pkgs.testers.runNixOSTest {
  name = "snix-lower-store-fixed";

  nodes.machine =
    { lib, ... }:
    {
      imports = [ common.node ];

      nix.settings.experimental-features = lib.mkForce "nix-command";

      services.snix-lower-store = {
        registrations = [ registration ];
        environmentFile = "/etc/snix-test.env";
      };
      environment.etc."snix-test.env".text = ''
        SNIX_LOWER_STORE_LOG_LEVEL=debug
      '';
      # The package's non-NixOS env file must have no effect.
      environment.etc."snix-lower-store/env".text = ''
        SNIX_LOWER_STORE_LOWER_DIR=/srv/lower/nix/store
      '';
    };

  testScript = ''
    ${common.scriptPrelude}

    overlay_unit = ${builtins.toJSON overlayUnit}
    lower_unit = ${builtins.toJSON lowerUnit}

    start_all()
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("snix-lower-store.socket")

    with subtest("4: experimental features from a string plus local-overlay-store"):
        features = machine.succeed("nix config show experimental-features")
        assert "nix-command" in features and "local-overlay-store" in features, features

    with subtest("5: a registration given as a Nix path is a store object of the system, imported"):
        machine.succeed("grep -qF -- '--registration \"${registrationInStore}\"' /etc/systemd/system/snix-lower-store-import.service")
        machine.succeed("nix-store -qR /run/current-system | grep -qxF ${registrationInStore}")
        machine.succeed("test -f ${registrationInStore}")
        machine.succeed("journalctl -b -u snix-lower-store-import.service | grep -q 'imported 0 entries'")
        # The image's own registration (a string) is imported next to it.
        nix(machine, f"path-info {lower_closure}")

    with subtest("9: nothing of the package's units, environmentFile read"):
        unit = machine.succeed("systemctl cat snix-lower-store.service snix-lower-store.socket")
        assert "/srv/lower" not in unit, unit
        assert "/etc/snix-lower-store/env" not in unit, unit
        env = machine.succeed("systemctl show -p Environment snix-lower-store.service")
        assert "SNIX_LOWER_STORE_LOWER_DIR=${common.lowerMount}/nix/store" in env, env
        machine.succeed("systemctl show -p EnvironmentFiles snix-lower-store.service | grep -q /etc/snix-test.env")
        machine.succeed("systemctl is-active snix-lower-store.service")
        pid = machine.succeed("systemctl show -p MainPID --value snix-lower-store.service").strip()
        machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -qx SNIX_LOWER_STORE_LOG_LEVEL=debug")
        machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -qx SNIX_LOWER_STORE_LOWER_DIR=${common.lowerMount}/nix/store")

    with subtest("the unit names are systemd's own"):
        for unit, where in ((overlay_unit, "${common.mergedStore}"), (lower_unit, "${common.lowerMount}")):
            escaped = machine.succeed(f"systemd-escape -p --suffix=mount {where}").strip()
            assert unit == escaped, f"{unit!r} != {escaped!r}"
            machine.succeed(f"systemctl is-active '{unit}'")

    with subtest("8: the socket goes with the overlay mount and brings it back"):
        machine.succeed(f"systemctl stop '{overlay_unit}'")
        machine.fail("systemctl is-active snix-lower-store.socket")
        machine.succeed("systemctl start snix-lower-store.socket")
        machine.succeed("mountpoint -q ${common.mergedStore}")
        nix(machine, f"path-info {lower_closure}")

    with subtest("7: restarting the lower mount re-runs the import"):
        before = machine.succeed("systemctl show -p InvocationID --value snix-lower-store-import.service").strip()
        machine.succeed(f"systemctl restart '{lower_unit}'")
        machine.wait_for_unit("snix-lower-store.socket")
        after = machine.succeed("systemctl show -p InvocationID --value snix-lower-store-import.service").strip()
        assert before != after, "the import did not run again"
        machine.succeed("mountpoint -q ${common.mergedStore}")
        nix(machine, f"path-info {lower_closure}")
  '';
}
