# Shared by the VM tests: a lower store the VM's own Nix database does not
# know, as an erofs image on a second virtio disk, and a node using it as a
# second store under /var/lib/snix-overlay (the VM's /nix/store is the test
# framework's own overlay and stays untouched).
{ pkgs, self }:

rec {
  # The lower closure: a root of its own (so no system closure can contain
  # it) holding busybox. It reaches the VM only inside the image: nothing in
  # the VM's system closure refers to it.
  lowerClosure = pkgs.runCommand "snix-lower-store-test-tools" { } ''
    mkdir -p $out/bin
    ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
  '';

  lowerInfo = pkgs.closureInfo { rootPaths = [ lowerClosure ]; };

  # nix/store/<paths> plus the closure's registration and path list at the top.
  lowerImage =
    pkgs.runCommand "snix-lower-store-test.erofs" { nativeBuildInputs = [ pkgs.erofs-utils ]; }
      ''
        mkdir -p root/nix/store
        while read -r path; do
          cp -a "$path" root/nix/store/
        done < ${lowerInfo}/store-paths
        cp ${lowerInfo}/registration root/registration
        cp ${lowerInfo}/store-paths root/store-paths
        mkfs.erofs -L snix-lower "$out" root
      '';

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

  node =
    { ... }:
    {
      imports = [
        self.nixosModules.default
        (attachDisk "snixlower" lowerImage)
      ];

      services.snix-lower-store = {
        enable = true;
        lower.device = "/dev/disk/by-id/virtio-snixlower";
        lower.fsType = "erofs";
        overlay.root = root;
        # A string: the registration comes from the image, not from the
        # system closure.
        registrations = [ "${lowerMount}/registration" ];
      };

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

    lower_closure = "${lowerClosure}"
  '';
}
