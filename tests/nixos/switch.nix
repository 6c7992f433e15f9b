# switch-to-configuration into a specialisation that changes the daemon's
# log level and the socket's mode and group, and back: the store stays mounted
# and answering, and what was built before is still there.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "snix-lower-store-switch";

  nodes.machine =
    { ... }:
    {
      imports = [ common.node ];

      specialisation.changed.configuration = {
        services.snix-lower-store = {
          logLevel = "debug";
          socket.mode = "0660";
          socket.group = "wheel";
        };
      };
    };

  testScript = ''
    ${common.scriptPrelude}

    start_all()
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("snix-lower-store.socket")
    original = machine.succeed("readlink -f /run/current-system").strip()
    url = shlex.quote(store_url(machine))

    nix(machine, f"path-info {lower_closure}")
    added = machine.succeed(f"echo before-switch > /tmp/f && nix --store {url} store add-file /tmp/f").strip()

    def answering(level, mode):
        machine.succeed("mountpoint -q ${common.mergedStore}")
        machine.succeed("mountpoint -q ${common.lowerMount}")
        machine.wait_for_unit("snix-lower-store.socket")
        nix(machine, f"path-info {lower_closure}")
        nix(machine, f"path-info {added}")
        machine.succeed(
            "systemctl show -p Environment snix-lower-store.service"
            f" | grep -q SNIX_LOWER_STORE_LOG_LEVEL={level}"
        )
        got = machine.succeed("stat -c %a /run/snix-lower-store/socket").strip()
        assert got == mode, f"socket mode {got}, expected {mode}"

    with subtest("switch to the specialisation"):
        machine.succeed("/run/current-system/specialisation/changed/bin/switch-to-configuration test")
        answering("debug", "660")
        machine.succeed("stat -c %G /run/snix-lower-store/socket | grep -qx wheel")

    with subtest("switch back"):
        machine.succeed(f"{original}/bin/switch-to-configuration test")
        answering("info", "666")

    machine.fail(
        "systemctl is-failed snix-lower-store.socket snix-lower-store-import.service"
        " $(systemd-escape -p --suffix=mount ${common.mergedStore})"
    )
  '';
}
