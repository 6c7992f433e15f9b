#!/usr/bin/env bash
# Makes ca-check-vectors.json: path infos with the `ca` real Nix recorded,
# for every content-address method Nix has (text, flat, nar, git) and
# several hash algorithms, plus a floating content-addressed derivation
# output that refers to another path and to itself. Run as root on a host
# with the e2e root file system cache; writes the JSON to stdout.
#
#   crates/types/tests/data/make-ca-check-vectors.sh [ROOTFS] > crates/types/tests/data/ca-check-vectors.json
#
# The root file system is never changed: an overlay with a tmpfs upper
# layer, in a private mount namespace.
set -euo pipefail
rootfs=${1:-/var/cache/snix-lower-store/rootfs/trixie}
[ -e "$rootfs/usr/bin/nix-store" ] || { echo "no nix-store in $rootfs" >&2; exit 1; }
exec unshare -m --propagation private bash -s "$rootfs" <<'OUTER'
set -euo pipefail
rootfs=$1
t=$(mktemp -d)
mount -t tmpfs tmpfs "$t"
mkdir "$t/upper" "$t/work" "$t/root"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$t/upper,workdir=$t/work" "$t/root"
mount -t proc proc "$t/root/proc"
mount --rbind /dev "$t/root/dev"
mount -t tmpfs tmpfs "$t/root/tmp"
chroot "$t/root" /bin/bash -s <<'INNER'
set -euo pipefail
export HOME=/tmp NIX_CONFIG='build-users-group =
sandbox = false
substituters =
experimental-features = nix-command ca-derivations git-hashing'
cd /tmp
printf 'flat file\n' > f.txt
mkdir d && printf 'one\n' > d/one
nix-store --add f.txt >/dev/null
nix-store --add d >/dev/null
nix-store --add-fixed sha256 f.txt >/dev/null
nix-store --add-fixed sha1 f.txt >/dev/null
nix-store --add-fixed md5 f.txt >/dev/null
nix-store --add-fixed --recursive sha1 d >/dev/null
nix-store --add-fixed --recursive sha512 d >/dev/null
nix store add --mode git --hash-algo sha1 --name git-f.txt f.txt >/dev/null
nix store add --mode git --hash-algo sha1 --name git-d d >/dev/null
cat > ca.nix <<'NIX'
let
  hello = builtins.toFile "hello" "hello\n";
  withRef = builtins.toFile "with-ref" "see ${hello}\n";
in
derivation {
  name = "selfish";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo \"$out refers to ${withRef}\" > $out" ];
  __contentAddressed = true;
  outputHashMode = "recursive";
  outputHashAlgo = "sha256";
}
NIX
nix-build --no-out-link ca.nix >/dev/null
nix path-info --json --all
INNER
OUTER
