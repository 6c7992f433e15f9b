# A real `switch-to-configuration switch` on a running system, in five steps
# from a base configuration without the module, asserting the state after
# each: enable the second store; change only the socket's path, mode and
# group; change the lower image (another device without some of the old
# lower's paths) with lower.onBrokenPaths = "refuse" (the switch fails and
# says why) and then "invalidate" (issue 21: the rotation settles Nix's
# database); and disable it again.
{ pkgs, common }:

let
  altSocket = "/run/snix-lower-store-alt/socket";
  altSocketOptions = {
    path = altSocket;
    mode = "0660";
    group = "wheel";
  };
  # The second lower: lowerClosure2 and busybox, not lowerClosure nor
  # lostPath.
  lower2Store = common.secondStore // {
    lower = common.secondStore.lower // {
      device = "/dev/disk/by-id/virtio-snixlower2";
    };
    socket = altSocketOptions;
  };
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
            socket = altSocketOptions;
          };
        };
        # lower.onBrokenPaths left at the second store's default, "refuse".
        lower2refuse.configuration = {
          services.snix-lower-store = lower2Store;
        };
        lower2.configuration = {
          services.snix-lower-store = lower2Store // {
            lower = lower2Store.lower // {
              onBrokenPaths = "invalidate";
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

    def switch(to, succeeds=True):
        # specialisation/<name> is a symlink to the specialised system;
        # /run/current-system resolves to that real path.
        link = base if to is None else f"{base}/specialisation/{to}"
        target = machine.succeed(f"readlink -f {link}").strip()
        command = f"{target}/bin/switch-to-configuration switch >&2"
        if succeeds:
            machine.succeed(command)
        else:
            machine.fail(command)
        got = machine.succeed("readlink -f /run/current-system").strip()
        assert got == target, f"current system {got}, expected {target}"

    def reconcile_journal():
        # By its identifier: it logs each path it acts on (STORE_PATH=...)
        # on stderr, and a short-lived process's lines can lose their unit.
        return machine.succeed("journalctl -b -t snix-lower-store-reconcile -o cat")

    def valid(path):
        """Whether Nix holds path valid in the merged store."""
        url = shlex.quote(store_url(machine))
        status, _ = machine.execute(f"nix-store --store {url} --check-validity {path}")
        return status == 0

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
        # Built on the first lower and referring to lost_path, one of its
        # paths the second lower does not have.
        refers = build_expr(machine, refers_to_lost_expr(), f"--store {shlex.quote(store_url(machine))}")
        refers_name = refers.removeprefix("/nix/store/")
        machine.succeed(f"grep -qx {lost_path} ${common.mergedStore}/{refers_name}")
        assert lost_path in nix(machine, f"path-info --recursive {refers}"), "refers-to-lost does not refer to lost_path"
        machine.succeed("systemctl is-active snix-lower-store-reconcile.service")
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

    with subtest("switch: another lower image, a path built on the old one lost part of its closure: refused"):
        switch("lower2refuse", succeeds=False)
        machine.wait_for_unit("snix-lower-store.socket")
        assert lower_label() == "snixlower2"
        machine.succeed(
            "journalctl -b -u snix-lower-store-import.service"
            " | grep -q 'the lower store changed since the last import'"
        )
        machine.fail("systemctl is-active snix-lower-store-reconcile.service")
        journal = reconcile_journal()
        # It names the path and says how to proceed.
        assert refers in journal, journal
        assert 'lower.onBrokenPaths = "invalidate"' in journal, journal
        # Refused: left as it was.
        assert valid(refers), "a refused path was changed"
        machine.succeed(f"test -f ${common.upperDir}/{refers_name}")

    with subtest("switch: the same with onBrokenPaths = invalidate: the rotation settles"):
        seen = len(reconcile_journal().splitlines())
        switch("lower2")
        machine.wait_for_unit("snix-lower-store.socket")
        machine.wait_for_unit("snix-lower-store-reconcile.service")
        assert lower_label() == "snixlower2"
        nix(machine, f"path-info {lower_closure2}")
        # The old lower's paths that are gone are invalid (the index and
        # Nix's own database), and so is what referred to one of them.
        for gone in [lower_closure, lost_path, refers]:
            assert not valid(gone), f"{gone} is still valid after the rotation"
        machine.succeed(f"test ! -e ${common.upperDir}/{refers_name}")
        # This run (the refused one named it too) invalidated it.
        journal = "\n".join(reconcile_journal().splitlines()[seen:])
        assert refers in journal and " invalidated" in journal, journal
        # What lost nothing stays: built's output refers to no lower path.
        assert valid(built), f"{built} was invalidated but lost nothing"
        # Nix's own check finds nothing left to repair.
        url = shlex.quote(store_url(machine))
        verify = machine.succeed(f"nix-store --store {url} --verify 2>&1")
        assert "disappeared" not in verify, verify
        build_through(machine, "built-after-lower-change", lower_closure2)
        machine.succeed("mountpoint -q ${common.mergedStore}")

    with subtest("a build that needs a vanished path builds it again"):
        again = build_expr(machine, refers_to_lost_expr(), f"--store {url}")
        assert again == refers, f"{again} != {refers}"
        lost_name = lost_path.removeprefix("/nix/store/")
        machine.succeed(f"test -f ${common.upperDir}/{lost_name}")
        assert valid(lost_path) and valid(refers)
        verify = machine.succeed(f"nix-store --store {url} --verify 2>&1")
        assert "disappeared" not in verify, verify

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
