# The daemon is started by its socket: inactive until the first query, active
# after it; killed, it is started again by the next query.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "snix-lower-store-socket-activation";

  nodes.machine = common.node;

  testScript = ''
    ${common.scriptPrelude}

    start_all()
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("snix-lower-store.socket")
    machine.wait_for_unit("snix-lower-store-import.service")

    with subtest("inactive until the first query"):
        machine.fail("systemctl is-active snix-lower-store.service")
        machine.succeed("test -S /run/snix-lower-store/socket")

    with subtest("active after it"):
        nix(machine, f"path-info {lower_closure}")
        machine.succeed("systemctl is-active snix-lower-store.service")
        machine.succeed("journalctl -b -u snix-lower-store.service | grep -q 'serving the lower store'")

    with subtest("killed, it comes back on the next query"):
        machine.succeed("systemctl kill -s KILL snix-lower-store.service")
        machine.wait_until_fails("systemctl is-active snix-lower-store.service")
        machine.succeed("systemctl is-active snix-lower-store.socket")
        nix(machine, f"path-info {lower_closure}")
        machine.succeed("systemctl is-active snix-lower-store.service")
        machine.succeed("systemctl is-active snix-lower-store.socket")
  '';
}
