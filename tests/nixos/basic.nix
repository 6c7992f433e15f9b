# A closure the VM's Nix database does not know, served from an erofs image
# through snix-lower-store, is valid in the merged store: path-info, the
# closure, and a build using it; the build's output lands in the upper layer.
{ pkgs, common }:

pkgs.testers.runNixOSTest {
  name = "snix-lower-store-basic";

  nodes.machine = common.node;

  testScript = ''
    ${common.scriptPrelude}

    start_all()
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("snix-lower-store.socket")

    with subtest("the system's Nix database does not know the lower closure"):
        machine.fail(f"nix-store --check-validity {lower_closure}")

    with subtest("the lower image is mounted and indexed"):
        machine.succeed("mountpoint -q ${common.lowerMount}")
        machine.succeed("systemctl is-active snix-lower-store-import.service")
        machine.succeed("journalctl -b -u snix-lower-store-import.service | grep -q 'imported'")

    with subtest("the lower image's files belong to root, not to the image's build user"):
        owners = machine.succeed("find ${common.lowerMount} -printf '%U:%G\\n' | sort -u").split()
        assert owners == ["0:0"], f"owners in the lower image: {owners}"

    with subtest("the overlay carries the strings Nix's check-mount compares"):
        options = machine.succeed("findmnt -n -o OPTIONS ${common.mergedStore}")
        assert "lowerdir=${common.lowerMount}/nix/store" in options, options
        assert "upperdir=${common.upperDir}" in options, options

    with subtest("nix path-info through the overlay"):
        info = nix(machine, f"path-info --json {lower_closure}")
        assert lower_closure in info, info

    with subtest("nix-store -qR gives the lower closure"):
        url = shlex.quote(store_url(machine))
        got = machine.succeed(f"nix-store --store {url} -qR {lower_closure} | sort")
        want = machine.succeed("sort ${common.lowerMount}/store-paths")
        assert got == want, f"closure through the overlay:\n{got}\nregistered:\n{want}"

    with subtest("a build using the lower closure succeeds; its output is in the upper layer"):
        out = build_through(machine, "built-through-overlay", lower_closure)
        name = out.removeprefix("/nix/store/")
        machine.succeed(f"test -f ${common.upperDir}/{name}")
        machine.fail(f"test -e ${common.lowerMount}/nix/store/{name}")
        machine.succeed(f"grep -q built-through-overlay ${common.mergedStore}/{name}")
        nix(machine, f"path-info {out}")
        # The lower layer is untouched: still exactly its own paths.
        machine.succeed("test $(ls ${common.lowerMount}/nix/store | wc -l) -eq $(wc -l < ${common.lowerMount}/store-paths)")
  '';
}
