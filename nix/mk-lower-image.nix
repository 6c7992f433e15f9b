# mkLowerImage: a lower-store image that carries its own index, built by Nix
# from the closure of `rootPaths` (the NixOS counterpart of
# scripts/mk-lower-image).
#
# Called with callPackage (nixpkgs' closureInfo, erofs-utils and the flake's
# snix-lower-store), it returns a function of the image's options:
#
#   (pkgs.callPackage ./nix/mk-lower-image.nix { snix-lower-store = …; }) {
#     rootPaths = [ pkgs.hello ];
#   }
#
# Layout: an image root as build-index and serve define it (the store
# directory holds store paths only: Nix's garbage collector over the merged
# store fails on any other name in it):
#   nix/store/<store path base names>  the closure of rootPaths, copied: the
#                                      lower dir (the module's default
#                                      lower.storeDir, <mount point>/nix/store)
#   .snix-lower-store/registration     closureInfo's registration (for
#                                      lower.index = "import")
#   .snix-lower-store/index, …/id      written by `snix-lower-store build-index
#                                      --registration --lower-dir <root>/nix/store`,
#                                      which proves content addresses (text,
#                                      fixed) from the files
# Mount it read-only at lower.mountPoint with lower.index = "image".
#
# Invariants: the store objects are copied as they are in the store (Nix has
# canonicalised them: mtime 1, no write bits); the erofs image has every
# inode owned by root and every mtime 1 (`--all-root -T1`); the image id
# (what `serve` checks the index against) and the erofs UUID are derived from
# the registration (`build-index --image-id`), and registration times are
# SOURCE_DATE_EPOCH: the same closure gives the same image, independent of
# the build user and the clock.
{
  lib,
  runCommand,
  closureInfo,
  erofs-utils,
  snix-lower-store,
}:

{
  # Store paths whose closure the image holds.
  rootPaths,
  name ? "snix-lower-image",
  # "erofs": one erofs file system image (the output is the file);
  # "directory": the tree itself (for virtiofs, NFS or a bind mount).
  format ? "erofs",
  # Volume label (mkfs.erofs -L, at most 15 bytes), so that the image is
  # /dev/disk/by-label/<label>; null for none.
  label ? null,
  # mkfs.erofs -z argument; null for an uncompressed image. lz4hc decompresses
  # fast at random offsets, as a store read by many processes needs.
  compression ? "lz4hc,12",
  # Compressed images only: share identical compressed blocks across files
  # (-Ededupe), pack the tail of each file with its inode (-Eztailpacking).
  dedupe ? true,
  tailPacking ? true,
  # Further mkfs.erofs arguments, after the module's own.
  extraMkfsArgs ? [ ],
  # The logical store directory the paths are named under; the image holds
  # them under the same path below its top.
  storeDir ? builtins.storeDir,
}:

let
  storeSubdir = lib.removePrefix "/" storeDir;
  formats = [
    "erofs"
    "directory"
  ];
  info = closureInfo { inherit rootPaths; };
  extended =
    lib.optional (compression != null && tailPacking) "ztailpacking"
    ++ lib.optional (compression != null && dedupe) "dedupe";
  mkfsArgs = [
    "--quiet"
    "--all-root"
    "-T1"
  ]
  ++ lib.optional (compression != null) "-z${compression}"
  ++ lib.optional (extended != [ ]) "-E${lib.concatStringsSep "," extended}"
  ++ lib.optionals (label != null) [
    "-L"
    label
  ]
  ++ extraMkfsArgs;
in
assert lib.assertMsg (lib.elem format formats)
  "mkLowerImage: format = \"${toString format}\": use one of ${lib.concatStringsSep ", " formats}.";
assert lib.assertMsg (
  rootPaths != [ ]
) "mkLowerImage: rootPaths is empty: give the store paths whose closure the image holds.";
assert lib.assertMsg (
  label == null || lib.stringLength label <= 15
) "mkLowerImage: label = \"${toString label}\" is longer than erofs' 15 bytes.";
runCommand (if format == "erofs" then "${name}.erofs" else name)
  {
    nativeBuildInputs = [ snix-lower-store ] ++ lib.optional (format == "erofs") erofs-utils;
    passthru = {
      inherit format storeDir storeSubdir;
      closureInfo = info;
      # Where the module finds the index and the id, relative to the image's top.
      indexPath = ".snix-lower-store/index";
      idPath = ".snix-lower-store/id";
    };
  }
  ''
    set -euo pipefail
    root=${if format == "erofs" then "$PWD/root" else "$out"}
    store="$root"/${lib.escapeShellArg storeSubdir}
    meta=$root/.snix-lower-store
    mkdir -p "$store" "$meta"
    while IFS= read -r path; do
      cp -a -- "$path" "$store/"
    done < ${info}/store-paths
    cp ${info}/registration "$meta/registration"
    # One closure, one id: different closures have different registrations.
    id=$(sha256sum < "$meta/registration" | cut -c1-32)
    SOURCE_DATE_EPOCH=''${SOURCE_DATE_EPOCH:-315532800} snix-lower-store build-index --store-dir ${lib.escapeShellArg storeDir} \
      --lower-dir "$store" --registration "$meta/registration" --image-id "$id"
    test -s "$meta/index" && test -s "$meta/id"
    # Store paths only in the store directory.
    if [ -n "$(find "$store" -mindepth 1 -maxdepth 1 -name '.*')" ]; then
      echo "mkLowerImage: a dot-name in $store" >&2
      exit 1
    fi
    # Read-only like the store objects (and like Nix leaves the directory
    # form), in the erofs image too.
    chmod -R a-w "$meta"
    find "$root" -mindepth 0 -maxdepth ${toString (lib.length (lib.splitString "/" storeSubdir))} -type d -exec chmod a-w {} +
    ${lib.optionalString (format == "erofs") ''
      # A UUID from the image id, not a random one.
      uuid=$(echo "$id" | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12})$/\1-\2-\3-\4-\5/')
      # mkfs.erofs takes SOURCE_DATE_EPOCH (stdenv sets it) over -T1 (1.5
      # does): every mtime must be 1, as in the store.
      env -u SOURCE_DATE_EPOCH mkfs.erofs ${lib.escapeShellArgs mkfsArgs} -U "$uuid" "$out" "$root"
    ''}
  ''
