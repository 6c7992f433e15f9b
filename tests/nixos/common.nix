# Shared by the VM tests: lower stores the VMs' own Nix databases do not
# know, as erofs images on extra virtio disks, and a node using one as a
# second store under /var/lib/snix-overlay (the VM's /nix/store is the test
# framework's own and stays untouched).
#
# Mounts: nixpkgs' qemu-vm.nix replaces `fileSystems` with
# `virtualisation.fileSystems` (mkVMOverride) in every test VM; the module
# declares its second-store mounts there itself, so the nodes only attach
# the lower disk.
{ pkgs, self }:

rec {
  module = self.nixosModules.default;

  # A lower closure: a root of its own (so no system closure can contain it)
  # holding busybox under `name`. It reaches the VM only inside the image:
  # nothing in the VM's system closure refers to it.
  mkLowerClosure =
    name:
    pkgs.runCommand name { } ''
      mkdir -p $out/bin
      ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
      echo ${name} > $out/name
    '';

  # nix/store/<paths> of the closure of `rootPaths`, plus its registration
  # and path list at the top, labelled `label`.
  mkLowerImage =
    label: rootPaths:
    let
      info = pkgs.closureInfo { inherit rootPaths; };
    in
    pkgs.runCommand "${label}.erofs" { nativeBuildInputs = [ pkgs.erofs-utils ]; } ''
      mkdir -p root/nix/store
      while read -r path; do
        cp -a "$path" root/nix/store/
      done < ${info}/store-paths
      cp ${info}/registration root/registration
      cp ${info}/store-paths root/store-paths
      # Owned by root, time stamps 0, as nixpkgs' qemu-vm.nix makes its store
      # image: without --force-uid/gid the files would belong to the build
      # user (uid 1000 in the sandbox: the VMs' first normal user).
      mkfs.erofs --force-uid=0 --force-gid=0 -T 0 -L ${label} "$out" root
    '';

  # The flake's own image builder (nix/mk-lower-image.nix): the closure at
  # the image's top with `.snix-lower-store/{registration,index,id}`.
  mkImageWithIndex = args: self.lib.mkLowerImage ({ inherit pkgs; } // args);

  lowerClosure = mkLowerClosure "snix-lower-store-test-tools";

  # A fixed-output path in the first lower only (issue 21, image rotation):
  # its store path depends on its name and content alone, so a VM can build
  # the same path again from its own derivation (refers_to_lost_expr in
  # scriptPrelude) once a rotation has taken it away.
  lostHash = "ed1d1a8db09e369fa33bde54f504d1fda0161a5ccd8a0d5517d92456fec28c41"; # sha256 of "lost\n"
  lostPath = pkgs.runCommand "snix-lower-store-lost" {
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = lostHash;
  } "echo lost > $out";

  lowerImage = mkLowerImage "snixlower" [
    lowerClosure
    lostPath
  ];

  # A second, different lower (for the switch test's change of image).
  lowerClosure2 = mkLowerClosure "snix-lower-store-test-tools-2";
  lowerImage2 = mkLowerImage "snixlower2" [ lowerClosure2 ];

  root = "/var/lib/snix-overlay";
  mergedStore = "${root}/nix/store";
  upperDir = "${root}/upper";
  lowerMount = "${root}/lower";

  # Attaches `image` read-only with a serial, so it is /dev/disk/by-id/virtio-<serial>.
  attachDisk = serial: image: {
    virtualisation.qemu.options = [
      "-drive"
      "file=${image},if=none,id=${serial},format=raw,readonly=on"
      "-device"
      "virtio-blk-pci,drive=${serial},serial=${serial}"
    ];
  };

  # The second store, as a user writes it (placement left at its default).
  secondStore = {
    enable = true;
    lower.device = "/dev/disk/by-id/virtio-snixlower";
    lower.fsType = "erofs";
    # A string: the registration comes from the image, not from the system
    # closure.
    registrations = [ "${lowerMount}/registration" ];
  };

  node =
    { ... }:
    {
      imports = [
        module
        (attachDisk "snixlower" lowerImage)
      ];

      services.snix-lower-store = secondStore;

      nix.settings.experimental-features = [ "nix-command" ];
      virtualisation.memorySize = 1024;
    };

  # Python prelude for the test scripts: the store URL and a few helpers.
  scriptPrelude = ''
    import shlex

    def store_url(m):
        return m.succeed("cat /etc/snix-lower-store/store-url").strip()

    def nix(m, args):
        return m.succeed(f"nix --store {shlex.quote(store_url(m))} {args}")

    def build_through(m, name, closure):
        """Builds a derivation whose builder is the lower closure's busybox;
        returns the output path."""
        url = shlex.quote(store_url(m))
        expr = (
            f'derivation {{ name = "{name}"; system = builtins.currentSystem; '
            f'builder = builtins.storePath "{closure}" + "/bin/busybox"; '
            f'args = [ "sh" "-c" "echo {name} > $out" ]; }}'
        )
        return m.succeed(f"nix-build --store {url} --no-out-link -E {shlex.quote(expr)}").strip()

    def refers_to_lost_expr():
        """A derivation (built with busybox, in every lower image) whose
        output refers to lost_path, a fixed-output path of the first lower
        image only, given here by its own fixed-output derivation: where
        lost_path is not valid, building this builds it first."""
        return (
            'let busybox = builtins.storePath "%s" + "/bin/busybox"; '
            'lost = derivation { name = "snix-lower-store-lost"; system = builtins.currentSystem; '
            'builder = busybox; args = [ "sh" "-c" "echo lost > $out" ]; '
            'outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "%s"; }; '
            'in derivation { name = "refers-to-lost"; system = builtins.currentSystem; '
            'builder = busybox; args = [ "sh" "-c" ("echo " + toString lost + " > $out") ]; }'
        ) % (busybox, lost_hash)

    def build_expr(m, expr, args="", out_link=None):
        """nix-build of a Nix expression, without substituters; returns the
        output path (rooted by out_link if given)."""
        link = "--no-out-link" if out_link is None else f"--out-link {shlex.quote(out_link)}"
        return m.succeed(
            f'nix-build {args} --option substituters "" {link} -E {shlex.quote(expr)}'
        ).strip()

    lower_closure = "${lowerClosure}"
    lower_closure2 = "${lowerClosure2}"
    busybox = "${pkgs.busybox}"
    lost_path = "${lostPath}"
    lost_hash = "${lostHash}"
  '';
}
