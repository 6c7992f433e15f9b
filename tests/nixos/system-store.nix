# The system-store placement: /nix/store is the merged store, mounted in the
# systemd initrd over an erofs image holding this VM's whole system closure
# (the VM does not mount the host's store). nix-daemon uses the local-overlay
# store with check-mount on; an unprivileged user builds through it on lower
# inputs; the output lands in the upper layer and survives a reboot with the
# index; `nix-store --gc` removes it and leaves the lower alone. A user's own
# NIX_CONFIG does not take the clients off the daemon (issue 12, failure 10).
#
# `index = "image"` (the test system-store-image): the same over an image
# built by the flake's lib.mkLowerImage, served with lower.index = "image"
# (issue 14): no import and no state directory, before and after the reboot.
#
# Then (issue 21) the first boot after a rotation: the VM starts again on
# another image with the same system but without some paths of the first
# one; snix-lower-store-reconcile.service, before nix-daemon, drops them
# from Nix's database and invalidates a rooted path built on one of them,
# saying so in the journal; a build needing them builds them again.
#
# The image is attached through QEMU_OPTS, which the VM's start script
# appends to its qemu command line and the test driver passes on from its
# environment at every start, so that each boot can have another one.
{
  pkgs,
  common,
  index ? "import",
}:

let
  upper = "/nix/.snix-rw/upper";
  lowerMount = "/nix/.snix-lower";
  imageIndex = index == "image";
  # The unit in front of the socket.
  gateUnit =
    if imageIndex then "snix-lower-store-check.service" else "snix-lower-store-import.service";
  # The lower image of `toplevel` and the paths `extra`.
  mkImage =
    toplevel: extra:
    if imageIndex then
      common.mkImageWithIndex {
        rootPaths = [ toplevel ] ++ extra;
        label = "snixsystem";
      }
    else
      common.mkLowerImage "snixsystem" ([ toplevel ] ++ extra);
in
pkgs.testers.runNixOSTest {
  name = "snix-lower-store-system-store${pkgs.lib.optionalString imageIndex "-image"}";

  nodes.machine =
    { lib, ... }:
    {
      # The lower image (the closure of this very system plus the tools the
      # test builds with) is attached by the test script, so the system does
      # not depend on it.
      imports = [ common.module ];

      boot.initrd.systemd.enable = true;

      # No host store: every store path the VM runs comes from the image.
      virtualisation.mountHostNixStore = false;
      virtualisation.useNixStoreImage = false;
      virtualisation.writableStore = false;
      # The framework would load the host's registration of the VM closure
      # into the Nix database; here those are lower paths, described by the
      # index instead.
      boot.postBootCommands = lib.mkForce "";

      services.snix-lower-store = {
        enable = true;
        placement = "system-store";
        lower.device = "/dev/disk/by-id/virtio-snixsystem";
        lower.fsType = "erofs";
        lower.index = index;
        registrations = lib.optional (!imageIndex) "${lowerMount}/registration";
      };

      # A user's NIX_CONFIG for something else entirely.
      environment.variables.NIX_CONFIG = "show-trace = true";
      users.users.alice.isNormalUser = true;

      nix.settings.experimental-features = [ "nix-command" ];
      virtualisation.memorySize = 2048;
      virtualisation.diskSize = 2048;
    };

  testScript =
    { nodes, ... }:
    let
      toplevel = nodes.machine.system.build.toplevel;
      # The first lower, and the one it is rotated to: the same system,
      # lowerClosure and lostPath replaced by lowerClosure2.
      imageA = mkImage toplevel [
        common.lowerClosure
        common.lostPath
      ];
      imageB = mkImage toplevel [ common.lowerClosure2 ];
    in
    ''
      ${common.scriptPrelude}
      import os

      def as_alice(cmd):
          return machine.succeed(f"su -l alice -c {shlex.quote(cmd)}")

      base_qemu_opts = os.environ.get("QEMU_OPTS", "")

      def attach_lower(image):
          """The lower image of the next start, as /dev/disk/by-id/virtio-snixsystem."""
          os.environ["QEMU_OPTS"] = (
              f"{base_qemu_opts} -drive file={image},if=none,id=snixsystem,format=raw,readonly=on"
              " -device virtio-blk-pci,drive=snixsystem,serial=snixsystem"
          )

      def monotonic(unit, prop):
          return int(machine.succeed(f"systemctl show -P {prop} {unit}").strip())

      attach_lower("${imageA}")
      start_all()
      machine.wait_for_unit("multi-user.target")
      toplevel = machine.succeed("readlink -f /run/current-system").strip()

      with subtest("/nix/store is the merged store, mounted in the initrd"):
          line = machine.succeed("findmnt -n -o FSTYPE,OPTIONS --mountpoint /nix/store | tail -n 1")
          assert line.startswith("overlay"), line
          assert "lowerdir=${lowerMount}/nix/store" in line, line
          assert "upperdir=${upper}" in line, line
          machine.succeed("mountpoint -q ${lowerMount}")
          # Owned by root: alice (uid 1000, the image builder's uid in the
          # sandbox) must own nothing of the system closure.
          owners = machine.succeed("find ${lowerMount} -printf '%U:%G\\n' | sort -u").split()
          assert owners == ["0:0"], f"owners in the lower image: {owners}"
          # The lower is mounted, so the import (or the image's check) and the
          # socket ran (their ConditionPathIsMountPoint= holds).
          machine.succeed("systemctl is-active ${gateUnit}")
          if ${if imageIndex then "True" else "False"}:
              machine.fail("systemctl cat snix-lower-store-import.service")
              machine.fail("test -e /var/lib/private/snix-lower-store")
              start = machine.succeed("systemctl show -p ExecStart --value snix-lower-store.service")
              assert "--index ${lowerMount}/.snix-lower-store/index" in start, start
          name = toplevel.removeprefix("/nix/store/")
          machine.succeed(f"test -e ${lowerMount}/nix/store/{name}")
          machine.fail(f"test -e ${upper}/{name}")
          # Not a stage-2 fstab entry: switch-to-configuration never touches it.
          machine.fail("grep -q ' /nix/store ' /etc/fstab")

      with subtest("nix-daemon uses the local-overlay store with check-mount"):
          machine.wait_for_unit("snix-lower-store-nix-daemon-env.service")
          machine.succeed("grep -q 'store = local-overlay://' /run/snix-lower-store-nix/nix-daemon.env")
          machine.succeed("grep -q 'check-mount=true' /run/snix-lower-store-nix/nix-daemon.env")
          machine.succeed("nix config show store | grep -qx daemon")
          as_alice(f"nix path-info {toplevel}")
          pid = machine.succeed("systemctl show -p MainPID --value nix-daemon.service").strip()
          machine.succeed(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep -q '^NIX_CONFIG=store = local-overlay://'")

      with subtest("a user's NIX_CONFIG keeps the clients on the daemon"):
          env = as_alice("echo $NIX_CONFIG")
          assert "show-trace" in env, env
          as_alice("nix config show store | grep -qx daemon")

      with subtest("an unprivileged user builds on lower inputs through nix-daemon"):
          expr = (
              'derivation { name = "built-by-alice"; system = builtins.currentSystem; '
              f'builder = builtins.storePath "{lower_closure}" + "/bin/busybox"; '
              'args = [ "sh" "-c" "echo built-by-alice > $out" ]; }'
          )
          out = as_alice(f"nix-build --no-out-link -E {shlex.quote(expr)}").strip()
          out_name = out.removeprefix("/nix/store/")
          machine.succeed(f"test -f ${upper}/{out_name}")
          machine.fail(f"test -e ${lowerMount}/nix/store/{out_name}")
          lower_count = machine.succeed("ls ${lowerMount}/nix/store | wc -l").strip()
          # Built on lost_path (a lower path the next image does not have),
          # rooted so that the garbage collector below keeps it.
          refers = build_expr(machine, refers_to_lost_expr(), out_link="/root/refers-to-lost")
          refers_name = refers.removeprefix("/nix/store/")
          machine.succeed(f"grep -qx {lost_path} {refers}")
          machine.succeed(f"test -f ${upper}/{refers_name}")

      with subtest("after a reboot the output and the index are still there"):
          machine.shutdown()
          machine.start()
          machine.wait_for_unit("multi-user.target")
          machine.succeed(f"test -f ${upper}/{out_name}")
          if ${if imageIndex then "True" else "False"}:
              machine.fail("test -e /var/lib/private/snix-lower-store")
              machine.succeed("systemctl is-active ${gateUnit}")
          else:
              machine.succeed("test -s /var/lib/private/snix-lower-store/index.sqlite")
              machine.fail(
                  "journalctl -b -u snix-lower-store-import.service"
                  " | grep -q 'the lower store changed since the last import'"
              )
          as_alice(f"nix path-info {out}")
          as_alice(f"nix path-info {lower_closure}")

      with subtest("nix-store --gc removes the output and leaves the lower alone"):
          machine.succeed("nix-store --gc >&2")
          machine.fail(f"test -e {out}")
          machine.fail(f"test -e ${upper}/{out_name}")
          # No whiteouts: nothing of the lower was deleted through the overlay.
          machine.succeed("test -z \"$(find ${upper} -type c)\"")
          assert machine.succeed("ls ${lowerMount}/nix/store | wc -l").strip() == lower_count
          machine.succeed(f"nix-store --check-validity {toplevel} {lower_closure}")
          machine.succeed(f"nix-store --check-validity {refers} {lost_path}")

      with subtest("first boot after a rotation to an image without some of the old lower paths"):
          machine.shutdown()
          attach_lower("${imageB}")
          machine.start()
          machine.wait_for_unit("multi-user.target")
          machine.succeed("systemctl is-active snix-lower-store-reconcile.service")
          if ${if imageIndex then "False" else "True"}:
              machine.succeed(
                  "journalctl -b -u snix-lower-store-import.service"
                  " | grep -q 'the lower store changed since the last import'"
              )
          # By its identifier (see switch.nix): every path it invalidates is
          # named (STORE_PATH=...).
          journal = machine.succeed("journalctl -b -t snix-lower-store-reconcile -o cat")
          assert "are invalidated, not refused" in journal, journal
          assert refers in journal, journal
          # The lower paths that are gone are invalid, and so is the rooted
          # path that referred to one of them.
          for gone in [lower_closure, lost_path, refers]:
              machine.fail(f"nix-store --check-validity {gone}")
          machine.succeed(f"test ! -e ${upper}/{refers_name}")
          machine.succeed(f"nix-store --check-validity {toplevel} {lower_closure2}")
          as_alice(f"nix path-info {lower_closure2}")
          # nix-daemon served only after the reconcile was done.
          settled = monotonic("snix-lower-store-reconcile.service", "ActiveEnterTimestampMonotonic")
          daemon = monotonic("nix-daemon.service", "ExecMainStartTimestampMonotonic")
          assert 0 < settled <= daemon, f"reconcile active at {settled}, nix-daemon started at {daemon}"
          verify = machine.succeed("nix-store --verify 2>&1")
          assert "disappeared" not in verify, verify

      with subtest("after the rotation a build that needs a vanished path builds it again"):
          again = build_expr(machine, refers_to_lost_expr(), out_link="/root/refers-to-lost")
          assert again == refers, f"{again} != {refers}"
          lost_name = lost_path.removeprefix("/nix/store/")
          machine.succeed(f"test -f ${upper}/{lost_name}")
          machine.succeed(f"nix-store --check-validity {refers} {lost_path}")
          machine.succeed("nix-store --gc >&2")
          machine.succeed(f"nix-store --check-validity {toplevel} {lower_closure2} {refers}")
    '';
}
