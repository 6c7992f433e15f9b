#!/usr/bin/env python3
"""Lays out one evaluated configuration (tests/nixos-local/eval.nix's JSON) as
a root file system the way NixOS would: the package's own units (its
postInstall run for real), the units rendered by nixpkgs' systemd-lib under
/etc/systemd/system, as `<unit>.d/overrides.conf` where the package has the
unit (generateUnits' asDropinIfExists), `.wants`/`.requires` links, /etc/fstab,
the /etc files, nix.conf, and the store paths the units name.

  render.py EVAL_JSON CONFIG ROOT MODE STORE_ROOT BIN
    MODE verify: every executable under a stand-in package path is a copy of
                 /bin/true (systemd-analyze only checks it exists), the
                 package's snix-lower-store is BIN;
    MODE boot:   stand-in package paths link to the container's /usr/bin and
                 /usr/sbin, the package's binary is BIN.
    STORE_ROOT: the chroot store holding the scripts eval.nix wrote
                 (builtins.toFile), copied in executable.
  render.py initrd EVAL_JSON CONFIG ROOT STORE_ROOT
    the configuration's initrd units (boot.initrd.systemd) under
    ROOT/etc/systemd/system with their links and the store paths they name,
    as MODE verify does.
  render.py effective UNIT_FILE [DROPIN...]
    prints the effective values of the keys checks care about, as JSON.

Invariant: nothing outside ROOT is written.
"""
import json, os, re, shutil, subprocess, sys

FAKE = "00000000000000000000000000000000"
STORE_PATH = re.compile(r"/nix/store/([0-9a-z]{32}-[A-Za-z0-9+._?=-]+)")


def run_post_install(script, out):
    """The package's postInstall, with the stdenv helpers it uses."""
    prelude = r'''
set -eu
substituteInPlace() {
  local f=$1; shift
  local content; content=$(cat "$f"; printf x); content=${content%x}
  while [ $# -gt 0 ]; do
    case $1 in
      --replace-fail|--replace-warn|--replace-quiet|--replace)
        case "$content" in *"$2"*) ;; *) [ "$1" = --replace-fail ] && { echo "substituteInPlace: $2 not in $f" >&2; exit 1; } ;; esac
        content=${content//"$2"/"$3"}; shift 3 ;;
      *) echo "substituteInPlace: unsupported $1" >&2; exit 1 ;;
    esac
  done
  printf %s "$content" >"$f"
}
'''
    subprocess.run(["bash", "-c", prelude + script], cwd=os.environ["REPO"],
                   env={**os.environ, "out": out}, check=True)


def layout(cfg, root, mode, store_root, binary):
    etc_sd = os.path.join(root, "etc/systemd/system")
    os.makedirs(etc_sd, exist_ok=True)
    pkg = cfg.get("package")
    pkg_units = {}
    if pkg:
        out = root + pkg["path"]
        os.makedirs(out + "/bin", exist_ok=True)
        shutil.copy(binary, out + "/bin/snix-lower-store")
        run_post_install(pkg["postInstall"], out)
        # $out was the directory under ROOT; the files name the store path.
        for dirpath, _, files in os.walk(out):
            for n in files:
                p = os.path.join(dirpath, n)
                if not os.path.islink(p) and n.endswith((".service", ".socket", ".mount", ".target", ".conf")):
                    t = open(p).read()
                    open(p, "w").write(t.replace(out, pkg["path"]))
        unit_dir = out + "/lib/systemd/system"
        if os.path.isdir(unit_dir) and any(pkg["path"].endswith(n) for n in cfg["systemdPackages"]):
            for name in os.listdir(unit_dir):
                pkg_units[name] = pkg["path"] + "/lib/systemd/system/" + name
                # Relative, so that it resolves under ROOT and in a container.
                os.symlink(os.path.relpath(root + pkg_units[name], etc_sd), os.path.join(etc_sd, name))
    texts = []
    for name, u in cfg["units"].items():
        texts.append(u["text"])
        if name in pkg_units and u["overrideStrategy"] == "asDropinIfExists":
            d = os.path.join(etc_sd, name + ".d")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "overrides.conf")
        else:
            path = os.path.join(etc_sd, name)
            if os.path.lexists(path):
                os.unlink(path)
        with open(path, "w") as f:
            f.write(u["text"])
        for kind, targets in (("wants", u["wantedBy"]), ("requires", u["requiredBy"])):
            for t in targets:
                d = os.path.join(etc_sd, f"{t}.{kind}")
                os.makedirs(d, exist_ok=True)
                os.symlink("../" + name, os.path.join(d, name))
    with open(os.path.join(root, "etc/fstab"), "w") as f:
        f.write(cfg["fstab"])
    for name, text in cfg["etc"].items():
        p = os.path.join(root, "etc", name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    os.makedirs(os.path.join(root, "etc/nix"), exist_ok=True)
    with open(os.path.join(root, "etc/nix/nix.conf"), "w") as f:
        f.write(cfg["nixConf"] + "\n")
    return copy_store_paths(texts, root, mode, store_root, pkg)


def copy_store_paths(texts, root, mode, store_root, pkg):
    """Store paths the units name, and those the scripts they run name."""
    made, pending = [], list(texts)
    while pending:
        text = pending.pop()
        for m in STORE_PATH.finditer(text):
            base = m.group(1)
            dest = os.path.join(root, "nix/store", base)
            if pkg and pkg["path"].endswith(base):
                continue
            if base.startswith(FAKE + "-"):
                # A stand-in package: the tools named under bin/ and sbin/.
                for tm in re.finditer(re.escape("/nix/store/" + base) + r"/(s?bin)/([A-Za-z0-9._+-]+)", text):
                    exe = os.path.join(dest, tm.group(1), tm.group(2))
                    if os.path.lexists(exe):
                        continue
                    os.makedirs(os.path.dirname(exe), exist_ok=True)
                    if mode == "verify":
                        shutil.copy("/bin/true", exe)
                    else:
                        tool = tm.group(2)
                        os.symlink(f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else f"/usr/sbin/{tool}", exe)
                if base not in made:
                    made.append(base)
            elif not os.path.lexists(dest):
                src = os.path.join(store_root, "nix/store", base)
                if not os.path.exists(src):
                    raise SystemExit(f"render: {src} named by a unit is not in the eval store")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(src, dest)
                os.chmod(dest, 0o755)
                made.append(base)
                pending.append(open(dest, errors="replace").read())
    return made


def layout_initrd(cfg, root, store_root):
    """The configuration's initrd units under ROOT/etc/systemd/system, their
    .wants/.requires links, and the store paths they name (MODE verify)."""
    etc_sd = os.path.join(root, "etc/systemd/system")
    os.makedirs(etc_sd, exist_ok=True)
    links = cfg.get("initrdUnitLinks", {})
    for name, text in cfg["initrdUnits"].items():
        # A unit systemd ships (initrd-parse-etc.service, given an
        # Environment= by nixpkgs' filesystems.nix) gets a drop-in, as
        # generateUnits' asDropinIfExists does with the systemd package's.
        if os.path.exists(os.path.join("/usr/lib/systemd/system", name)):
            d = os.path.join(etc_sd, name + ".d")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "overrides.conf")
        else:
            path = os.path.join(etc_sd, name)
        with open(path, "w") as f:
            f.write(text)
        for kind, key in (("wants", "wantedBy"), ("requires", "requiredBy")):
            for t in links.get(name, {}).get(key, []):
                d = os.path.join(etc_sd, f"{t}.{kind}")
                os.makedirs(d, exist_ok=True)
                os.symlink("../" + name, os.path.join(d, name))
    return copy_store_paths(list(cfg["initrdUnits"].values()), root, "verify", store_root, None)


def effective(unit, dropins):
    """Values after systemd's rules: lists grow, an empty assignment resets."""
    vals = {}
    for path in [unit] + dropins:
        for line in open(path):
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            k, v = line.split("=", 1)
            if v == "":
                vals[k] = []
            else:
                vals.setdefault(k, []).append(v)
    return vals


if __name__ == "__main__":
    if sys.argv[1] == "effective":
        print(json.dumps(effective(sys.argv[2], sys.argv[3:])))
    elif sys.argv[1] == "initrd":
        data = json.load(open(sys.argv[2]))
        print(" ".join(layout_initrd(data["configs"][sys.argv[3]], sys.argv[4], sys.argv[5])))
    else:
        data = json.load(open(sys.argv[1]))
        cfg = data["configs"][sys.argv[2]]
        made = layout(cfg, sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
        print(" ".join(made))
