# The lower device never appears: the boot completes, the mount times out,
# the import unit fails with one clear journal line, the overlay is not
# mounted, and the socket is not listening (dependency failed) instead of
# serving a half-made store.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "snix-lower-store-lower-missing";

  nodes.machine =
    { ... }:
    {
      imports = [ common.node ];

      services.snix-lower-store = {
        lower.device = pkgs.lib.mkForce "/dev/disk/by-id/virtio-absent";
        lower.deviceTimeout = "5s";
      };
    };

  testScript = ''
    ${common.scriptPrelude}

    start_all()
    machine.wait_for_unit("multi-user.target")

    with subtest("the import unit fails and says why"):
        machine.wait_until_succeeds("systemctl is-failed snix-lower-store-import.service")
        # It ran and failed itself: not a "dependency" result from the
        # failed lower mount (it only wants that mount).
        result = machine.succeed("systemctl show -p Result --value snix-lower-store-import.service").strip()
        assert result == "exit-code", f"import result {result}"
        machine.succeed(
            "journalctl -b -u snix-lower-store-import.service"
            " | grep -q 'snix-lower-store: lower store not mounted: ${common.lowerMount}'"
        )

    with subtest("nothing is half-mounted"):
        machine.fail("mountpoint -q ${common.lowerMount}")
        machine.fail("mountpoint -q ${common.mergedStore}")

    with subtest("the socket and the daemon are down, by dependency"):
        machine.fail("systemctl is-active snix-lower-store.socket")
        machine.fail("systemctl is-active snix-lower-store.service")
        machine.fail("test -e /run/snix-lower-store/socket")
        machine.succeed("journalctl -b | grep -q 'Dependency failed for snix-lower-store socket'")

    with subtest("Nix refuses the store rather than using it"):
        url = shlex.quote(store_url(machine))
        machine.fail(f"nix --store {url} path-info {lower_closure}")
  '';
}
