# A lower image carrying its own index, built by the flake's
# lib.mkLowerImage (nixpkgs' closureInfo and erofs-utils) and served with
# lower.index = "image": no import unit, no state directory, the socket
# listening once the image is mounted; path-info answers with the content
# addresses build-index proved from the registration (a text path and a
# source path); -qR and a build work over the local-overlay store, and so
# does garbage collection (the image's store directory holds store paths
# only). Then
# `switch-to-configuration switch` to the registration import of the same
# image (lower.index = "import") and back. Nothing is written to the image's
# device.
{ pkgs, common }:

let
  # A text path (builtins.toFile: text:sha256) and a source path
  # (builtins.path: fixed:r:sha256): a registration carries neither's `ca`.
  textPath = builtins.toFile "snix-image-text" "served from the image's own index\n";
  sourcePath = builtins.path {
    path = ./fixtures;
    name = "snix-image-source";
  };
  # The root: busybox to build with, and both paths as references.
  root = pkgs.runCommand "snix-image-root" { } ''
    mkdir -p $out/bin
    ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
    echo ${textPath} > $out/text
    echo ${sourcePath} > $out/source
  '';
  image = common.mkImageWithIndex {
    rootPaths = [ root ];
    label = "sniximage";
  };
  lowerMount = common.lowerMount;
in
pkgs.testers.runNixOSTest {
  name = "snix-lower-store-image";

  nodes.machine =
    { lib, ... }:
    {
      imports = [
        common.module
        (common.attachDisk "sniximage" image)
      ];

      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-id/virtio-sniximage";
        lower.fsType = "erofs";
        lower.index = "image";
      };

      # The same image through the registration it carries, imported into
      # the state directory.
      specialisation.imported.configuration = {
        services.snix-lower-store = {
          lower.index = lib.mkForce "import";
          registrations = [ "${lowerMount}/.snix-lower-store/registration" ];
        };
      };

      boot.loader.grub.enable = false;
      system.switch.enable = true;
      nix.settings.experimental-features = [ "nix-command" ];
      virtualisation.memorySize = 1024;
    };

  testScript = ''
    import json

    ${common.scriptPrelude}

    root = "${root}"
    text_path = "${textPath}"
    source_path = "${sourcePath}"
    # The closure the image was built from, read by the driver on the host.
    with open("${image.closureInfo}/store-paths") as f:
        closure = sorted(f.read().split())

    def path_infos(out):
        """`nix path-info --json` in each of its shapes, as {store path: info}:
        a list of infos with "path" (Nix < 2.19); an object by store path
        (format 1, the default up to Nix 2.32); {"info": {base name: info},
        "storeDir": ...} (--json-format 2, Nix >= 2.33)."""
        v = json.loads(out)
        if isinstance(v, list):
            return {i["path"]: i for i in v}
        store_dir = "/nix/store"
        if isinstance(v, dict) and isinstance(v.get("info"), dict) and "version" in v:
            store_dir = v.get("storeDir") or store_dir
            v = v["info"]
        assert isinstance(v, dict), f"path-info --json: unknown shape {out[:300]!r}"
        return {(k if k.startswith("/") else f"{store_dir}/{k}"): i for k, i in v.items()}

    def ca_kind(info):
        """The method and hash algorithm of an info's content address, from
        its string form ("fixed:r:sha256:...", format 1) or its object form
        ({"method": "nar", "hash": ...}, format 2): ("fixed:r", "sha256")."""
        ca = (info or {}).get("ca")
        if isinstance(ca, str):
            head, _, _ = ca.rpartition(":")
            method, _, algo = head.rpartition(":")
            return (method, algo)
        if isinstance(ca, dict):
            method = {"text": "text", "nar": "fixed:r", "flat": "fixed", "git": "fixed:git"}.get(ca.get("method"), ca.get("method"))
            h = ca.get("hash")
            algo = h.get("algorithm") if isinstance(h, dict) else str(h).split("-", 1)[0].split(":", 1)[0]
            return (method, algo)
        return (None, None)

    start_all()
    machine.wait_for_unit("multi-user.target")
    machine.wait_for_unit("snix-lower-store.socket")
    dev = machine.succeed("readlink -f /dev/disk/by-id/virtio-sniximage").strip()
    blk = dev.removeprefix("/dev/")

    with subtest("the image is mounted read-only, its index beside its store directory"):
        machine.succeed("findmnt -n -o OPTIONS ${lowerMount} | grep -Eq '^ro(,|$)'")
        machine.succeed("test -s ${lowerMount}/.snix-lower-store/index")
        machine.succeed("test -s ${lowerMount}/.snix-lower-store/id")
        machine.succeed("test -s ${lowerMount}/.snix-lower-store/registration")
        machine.succeed(f"test -d ${lowerMount}/nix/store/{root.removeprefix('/nix/store/')}")
        names = sorted(machine.succeed("ls -A ${lowerMount}/nix/store").split())
        assert names == sorted(p.removeprefix("/nix/store/") for p in closure), names
        options = machine.succeed("findmnt -n -o OPTIONS ${common.mergedStore}")
        assert "lowerdir=${lowerMount}/nix/store," in options + ",", options

    with subtest("no import: no import unit, no state directory; the check unit ran"):
        machine.fail("systemctl cat snix-lower-store-import.service")
        machine.succeed("systemctl is-active snix-lower-store-check.service")
        machine.succeed("systemctl is-active snix-lower-store.socket")
        machine.fail("test -e /var/lib/private/snix-lower-store")
        machine.fail("test -e /var/lib/snix-lower-store")
        start = machine.succeed("systemctl show -p ExecStart --value snix-lower-store.service")
        assert "--index ${lowerMount}/.snix-lower-store/index --image-check" in start, start

    with subtest("the system's Nix database does not know the image's closure"):
        machine.fail(f"nix-store --check-validity {root}")

    with subtest("path-info lists the closure, with the proven content addresses"):
        infos = path_infos(nix(machine, f"path-info --json --recursive {root}"))
        assert sorted(infos) == closure, f"path-info: {sorted(infos)}\nclosure: {closure}"
        ca = ca_kind(infos.get(text_path))
        assert ca == ("text", "sha256"), f"ca of {text_path}: {ca!r} from {infos.get(text_path)!r}"
        ca = ca_kind(infos.get(source_path))
        assert ca == ("fixed:r", "sha256"), f"ca of {source_path}: {ca!r} from {infos.get(source_path)!r}"
        machine.succeed("journalctl -b -u snix-lower-store.service | grep -q \"serving the image's own index\"")

    with subtest("nix-store -qR over the local-overlay store gives the closure"):
        url = shlex.quote(store_url(machine))
        got = sorted(machine.succeed(f"nix-store --store {url} -qR {root}").split())
        assert got == closure, f"closure through the overlay:\n{got}\nin the image:\n{closure}"

    with subtest("a build on the image's paths lands in the upper layer"):
        out = build_through(machine, "built-over-image", root)
        name = out.removeprefix("/nix/store/")
        machine.succeed(f"test -f ${common.upperDir}/{name}")
        machine.fail(f"test -e ${lowerMount}/nix/store/{name}")
        nix(machine, f"path-info {out}")

    with subtest("garbage collection over the local-overlay store leaves the image alone"):
        url = shlex.quote(store_url(machine))
        gone = build_through(machine, "collected", root)
        machine.succeed(f"nix-store --store {url} --gc >&2")
        machine.fail(f"test -e ${common.upperDir}/{gone.removeprefix('/nix/store/')}")
        machine.succeed("test -z \"$(find ${common.upperDir} -type c)\"")
        got = sorted(machine.succeed(f"nix-store --store {url} -qR {root}").split())
        assert got == closure, got
        # `out` is kept for the switch below: build it again if collected.
        out = build_through(machine, "built-over-image", root)

    base = machine.succeed("readlink -f /run/current-system").strip()

    def switch(to):
        link = base if to is None else f"{base}/specialisation/{to}"
        target = machine.succeed(f"readlink -f {link}").strip()
        machine.succeed(f"{target}/bin/switch-to-configuration switch >&2")
        got = machine.succeed("readlink -f /run/current-system").strip()
        assert got == target, f"current system {got}, expected {target}"

    def text_ca():
        return ca_kind(path_infos(nix(machine, f"path-info --json {text_path}")).get(text_path))

    with subtest("switch to the registration import of the same image"):
        switch("imported")
        machine.wait_for_unit("snix-lower-store.socket")
        machine.succeed("systemctl is-active snix-lower-store-import.service")
        machine.fail("systemctl cat snix-lower-store-check.service")
        machine.succeed("test -s /var/lib/private/snix-lower-store/index.sqlite")
        start = machine.succeed("systemctl show -p ExecStart --value snix-lower-store.service")
        assert "--index" not in start, start
        nix(machine, f"path-info {out}")
        # The import proves the text path's content address too.
        assert text_ca() == ("text", "sha256"), text_ca()

    with subtest("switch back to the image's own index; the imported one is not read"):
        switch(None)
        machine.wait_for_unit("snix-lower-store.socket")
        machine.fail("systemctl cat snix-lower-store-import.service")
        machine.succeed("systemctl is-active snix-lower-store-check.service")
        start = machine.succeed("systemctl show -p ExecStart --value snix-lower-store.service")
        assert "--index ${lowerMount}/.snix-lower-store/index --image-check" in start, start
        assert text_ca() == ("text", "sha256"), text_ca()
        nix(machine, f"path-info {out}")
        pid = machine.succeed("systemctl show -p MainPID --value snix-lower-store.service").strip()
        machine.succeed(
            f"journalctl -b _PID={pid} | grep -q \"serving the image's own index\""
        )

    with subtest("nothing was written to the image's device"):
        # /sys/block/<dev>/stat: the fifth field counts write requests.
        writes = machine.succeed(f"cat /sys/block/{blk}/stat").split()[4]
        assert writes == "0", f"{dev}: {writes} write requests"
        machine.succeed(f"test $(blockdev --getro {dev}) = 1")
  '';
}
