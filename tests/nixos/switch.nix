# A real `switch-to-configuration switch` on a running system, in four steps
# from a base configuration without the module, asserting the state after
# each: enable the second store; change only the socket's path, mode and
# group; change the lower image (another device holding other paths); and
# disable it again.
{ pkgs, common }:

let
  altSocket = "/run/snix-lower-store-alt/socket";
in
pkgs.testers.runNixOSTest {
  name = "snix-lower-store-switch";

  nodes.machine =
    { ... }:
    {
      imports = [
        common.module
        (common.attachDisk "snixlower" common.lowerImage)
        (common.attachDisk "snixlower2" common.lowerImage2)
      ];

      # `switch` also installs the boot loader: none in this VM (the
      # default prints a warning and succeeds).
      boot.loader.grub.enable = false;
      system.switch.enable = true;
      nix.settings.experimental-features = [ "nix-command" ];
      virtualisation.memorySize = 1024;

      # Base: the module is imported but off.
      specialisation = {
        enabled.configuration = {
          services.snix-lower-store = common.secondStore;
        };
        socket.configuration = {
          services.snix-lower-store = common.secondStore // {
            socket = {
              path = altSocket;
              mode = "0660";
              group = "wheel";
            };
          };
        };
        lower2.configuration = {
          services.snix-lower-store = common.secondStore // {
            lower = common.secondStore.lower // {
              device = "/dev/disk/by-id/virtio-snixlower2";
            };
            socket = {
              path = altSocket;
              mode = "0660";
              group = "wheel";
            };
          };
        };
      };
    };

  testScript = ''
    ${common.scriptPrelude}

    start_all()
    machine.wait_for_unit("multi-user.target")
    base = machine.succeed("readlink -f /run/current-system").strip()

    def switch(to):
        # specialisation/<name> is a symlink to the specialised system;
        # /run/current-system resolves to that real path.
        link = base if to is None else f"{base}/specialisation/{to}"
        target = machine.succeed(f"readlink -f {link}").strip()
        machine.succeed(f"{target}/bin/switch-to-configuration switch >&2")
        got = machine.succeed("readlink -f /run/current-system").strip()
        assert got == target, f"current system {got}, expected {target}"

    def lower_label():
        dev = machine.succeed("findmnt -n -o SOURCE ${common.lowerMount}").strip()
        return machine.succeed(f"blkid -o value -s LABEL {dev}").strip()

    with subtest("base: nothing of the module"):
        machine.fail("systemctl cat snix-lower-store.socket")
        machine.fail("mountpoint -q ${common.mergedStore}")
        machine.fail("test -e /etc/snix-lower-store/store-url")

    with subtest("switch: enable the second store on the running system"):
        switch("enabled")
        machine.wait_for_unit("snix-lower-store.socket")
        machine.succeed("mountpoint -q ${common.lowerMount}")
        machine.succeed("mountpoint -q ${common.mergedStore}")
        assert lower_label() == "snixlower"
        machine.succeed("test -S /run/snix-lower-store/socket")
        nix(machine, f"path-info {lower_closure}")
        built = build_through(machine, "built-after-enable", lower_closure)
        # The daemon is running when the next switch comes.
        machine.succeed("systemctl is-active snix-lower-store.service")

    with subtest("switch: only the socket's path, mode and group change"):
        switch("socket")
        machine.wait_for_unit("snix-lower-store.socket")
        machine.succeed("test ! -e /run/snix-lower-store/socket")
        machine.succeed("test -S ${altSocket}")
        mode = machine.succeed("stat -c %a ${altSocket}").strip()
        assert mode == "660", f"socket mode {mode}"
        group = machine.succeed("stat -c %G ${altSocket}").strip()
        assert group == "wheel", f"socket group {group}"
        listen = machine.succeed("systemctl show -p Listen snix-lower-store.socket")
        assert "${altSocket}" in listen, listen
        url = store_url(machine)
        assert "${altSocket}" in url, url
        nix(machine, f"path-info {lower_closure}")
        nix(machine, f"path-info {built}")
        machine.succeed("mountpoint -q ${common.mergedStore}")

    with subtest("switch: another lower image"):
        switch("lower2")
        machine.wait_for_unit("snix-lower-store.socket")
        assert lower_label() == "snixlower2"
        machine.succeed(
            "journalctl -b -u snix-lower-store-import.service"
            " | grep -q 'the lower store changed since the last import'"
        )
        nix(machine, f"path-info {lower_closure2}")
        # The index describes the new lower only.
        url = shlex.quote(store_url(machine))
        machine.fail(f"nix --store {url} path-info {lower_closure}")
        build_through(machine, "built-after-lower-change", lower_closure2)
        machine.succeed("mountpoint -q ${common.mergedStore}")

    with subtest("switch: disable"):
        switch(None)
        machine.fail("mountpoint -q ${common.mergedStore}")
        machine.fail("mountpoint -q ${common.lowerMount}")
        machine.fail("systemctl is-active snix-lower-store.socket")
        machine.fail("systemctl cat snix-lower-store.socket")
        machine.fail("test -e ${altSocket}")
        machine.fail("test -e /etc/snix-lower-store/store-url")
        # What was built stays in the upper layer.
        name = built.removeprefix("/nix/store/")
        machine.succeed(f"test -f ${common.upperDir}/{name}")
  '';
}
