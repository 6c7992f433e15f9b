#!/usr/bin/env python3
"""Lints and type-checks every VM test script (tests/nixos/*.nix) after Nix
interpolation, as nixpkgs' nixos/lib/testing/driver.nix does, and checks
that every systemd unit and module-owned path the script names exists in
what that test's nodes render.

  check.py EVAL_JSON DRIVER_SRC PREPEND BIN_DIR OUT_DIR

EVAL_JSON  tests/nixos-local/eval.nix's JSON: `vmScripts.<test>` (the script
           as real Nix interpolated it, the node names) and `configs`
           ("vm-test <test>/<node>[/specialisation/<s>]": rendered units,
           mount units, initrd units, /etc files, /etc/fstab);
DRIVER_SRC nixpkgs' nixos/lib/test-driver/src (the Machine API);
PREPEND    nixpkgs' nixos/lib/test-script-prepend.py;
BIN_DIR    where pyflakes, mypy, ruff and ty are (the venv of
           tests/vm-scripts/requirements.txt);
OUT_DIR    scratch: the scripts, typed scripts, caches.

Per test, one PASS/FAIL line each:
- pyflakes with PYFLAKES_BUILTINS = node names + the driver's symbols
  (Driver.test_symbols, read from driver.py with `ast`), and `machine` when
  there is one node (driver.nix's `theOnlyMachine`);
- mypy --no-implicit-optional over prepend + `<node>: QemuMachine;` +
  script. The copied prepend is older than the copied driver (it imports
  `Machine` and `Logger`, which the driver no longer has): those two names
  are mapped to `BaseMachine` and `AbstractLogger` when the file is read;
  a prepend without those imports is an error, not a silent pass;
- ruff (its pyflakes rules, F, with the same builtins) on the script, ty on
  the typed script: the toolset nixpkgs moved to in April 2026;
- units: every string literal of the script, as Python reads it
  (`ast`: escapes such as `\\x2d` decoded), scanned for unit names
  (`*.service`, `*.mount`, ...); each must be rendered by a configuration of
  the test's nodes (or a specialisation), or be one systemd itself ships
  (this host's /usr/lib/systemd/system); inside machine.fail(...) (an
  absence asserted) it may instead be one any configuration renders;
- paths: every path literal under the module's own roots (/run/snix-*,
  /etc/snix-lower-store, /var/lib/snix-overlay, /nix/.snix-*) must be a
  path or a parent of a path the nodes' rendered units, fstab or /etc files
  name, or lie under one that is a mount point or names nothing under it
  (the lower image's files, the upper layer's objects); /etc/systemd/system/
  <unit> must be a rendered unit.

First, a negative control: a made-up script with one fault per check,
against the first test's nodes; each check must reject it.

Exits 1 when any line is FAIL.
"""
import ast
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from textfiles import read, write  # noqa: E402

UNIT_RE = re.compile(
    r"[A-Za-z0-9@_:.\\-]+\.(?:service|socket|mount|automount|target|timer|path|slice|swap)(?![A-Za-z0-9_-])"
)
PATH_RE = re.compile(r"/[A-Za-z0-9@_.+\\/-]+")
OWN_ROOTS = ("/run/snix-", "/etc/snix-lower-store", "/var/lib/snix-overlay", "/nix/.snix-")
HOST_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")

failures = 0
# While the negative control runs: every check must reject its script.
expect_fail = False

# The negative control: a script with one fault per check, checked against
# the first test's nodes (a misspelt method and a wrong argument type for
# mypy and ty, an undefined name for pyflakes and ruff, a unit name whose
# \x2d escape Python decodes, a module path no node renders).
BROKEN_SCRIPT = """
machine.wait_for_unit(5)
machine.succed("true")
print(undefined_name)
machine.succeed("systemctl stop 'var-lib-snix\\x2doverlay-nix-store.mount'")
machine.succeed("test -S /run/snix-lower-stor/socket")
machine.succeed("test -d /var/lib/snix-overlay/uper")
"""


def report(ok, name, detail=""):
    global failures
    if expect_fail:
        ok, name, detail = not ok, f"vm-scripts negative control: {name} rejects a broken script", (
            f"it accepts it: {detail}" if ok else detail[:300]
        )
    if ok:
        print(f"PASS {name}" + (f" ({detail})" if detail else ""))
    else:
        failures += 1
        print(f"FAIL {name}: {detail}")


def driver_symbols(driver_src):
    """The names Driver.test_symbols() gives a test script: its dict(...)
    keywords (as generate-driver-symbols prints them)."""
    tree = ast.parse(read(os.path.join(driver_src, "test_driver/driver.py")))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "test_symbols":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Call) and getattr(sub.func, "id", None) == "dict":
                    return [k.arg for k in sub.keywords if k.arg]
    raise SystemExit("check.py: no Driver.test_symbols dict(...) in driver.py")


def typed_prepend(path):
    """The copied prepend, its two stale imports mapped to the driver's
    current classes."""
    text = read(path)
    maps = {
        "from test_driver.machine import Machine\n": "from test_driver.machine import BaseMachine as Machine\n"
        "from test_driver.machine import QemuMachine\n",
        "from test_driver.logger import Logger\n": "from test_driver.logger import AbstractLogger as Logger\n",
    }
    for old, new in maps.items():
        if old not in text:
            raise SystemExit(f"check.py: {path} no longer has {old.strip()!r}: review the mapping")
        text = text.replace(old, new)
    return text


def run(cmd, env=None):
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, **(env or {})})
    out = (p.stdout + p.stderr).strip()
    return p.returncode, out


def short(text, n=1500):
    return text.replace("\n", " | ")[:n]


def lint(test, script, nodes, symbols, prepend, bins, driver_src, out):
    names = list(nodes) + (["machine"] if len(nodes) == 1 and "machine" not in nodes else [])
    plain = os.path.join(out, f"{test}.py")
    typed = os.path.join(out, f"{test}-typed.py")
    write(plain, script)
    hints = " ".join(f"{n}: QemuMachine;" for n in names)
    write(typed, prepend + hints + "\n" + script)
    builtins = ",".join(names + symbols)

    rc, o = run([f"{bins}/pyflakes", plain], {"PYFLAKES_BUILTINS": builtins})
    report(rc == 0 and not o, f"vm-script {test}: pyflakes", o and short(o))

    cfg = os.path.join(out, "mypy.ini")
    rc, o = run([f"{bins}/mypy", "--config-file", cfg, "--no-implicit-optional", "--pretty",
                 "--no-color-output", "--python-version", "3.13", "--cache-dir", os.path.join(out, "mypy-cache"), typed],
                {"MYPYPATH": driver_src})
    report(rc == 0, f"vm-script {test}: mypy (prepend + {hints.strip()})", short(o) if rc else o.splitlines()[-1])

    rc, o = run([f"{bins}/ruff", "check", "--isolated", "--no-cache", "--select", "F,E9", "--target-version", "py313",
                 "--config", "builtins = " + json.dumps(names + symbols), "--output-format", "concise", plain])
    report(rc == 0, f"vm-script {test}: ruff check (F, E9)", short(o) if rc else "")

    # ty does not take a bare annotation as a binding (mypy does): the same
    # prepend and hints, as a stub module the script star-imports.
    tydir = os.path.join(out, f"ty-{test}")
    os.makedirs(tydir, exist_ok=True)
    write(os.path.join(tydir, "vm_test_symbols.pyi"), prepend + hints.replace("; ", "\n") + "\n")
    tyscript = os.path.join(tydir, f"{test}.py")
    write(tyscript, "from vm_test_symbols import *  # noqa: F403\n" + script)
    rc, o = run([f"{bins}/ty", "check", "--no-progress", "--python-version", "3.13", "--python", f"{bins}/..",
                 "--extra-search-path", driver_src, "--extra-search-path", tydir, "--output-format", "concise", tyscript])
    report(rc == 0, f"vm-script {test}: ty check", short(o) if rc else "")


def live(tree):
    """The nodes of a tree, without the branches Nix interpolation turned
    off (`if False:` bodies, `if True:` else branches)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Constant) and isinstance(node.test.value, bool):
            todo.extend(node.body if node.test.value else node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def strings_of(script):
    """Every live string constant of the script as Python reads it
    (f-string parts included)."""
    return [n.value for n in live(ast.parse(script)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def host_units():
    units = set()
    for d in HOST_UNIT_DIRS:
        if os.path.isdir(d):
            units.update(os.listdir(d))
    return units


def node_facts(configs, test):
    """Units, /etc names and rendered texts of every configuration of the
    test's nodes (specialisations included)."""
    units, etc, texts, mounts = set(), set(), [], set()
    for name, c in configs.items():
        if not name.startswith(f"vm-test {test}/") or not c.get("evaluates"):
            continue
        units.update(c["units"])
        units.update(c["mountUnitNames"])
        units.update(c.get("initrdUnits", {}))
        etc.update(c["etc"])
        etc.add("nix/nix.conf")
        texts += [u["text"] for u in c["units"].values()] + list(c.get("initrdUnits", {}).values())
        texts += [c["fstab"]] + list(c["etc"].values())
        mounts.update(line.split()[1] for line in c["fstab"].splitlines() if line.strip() and not line.startswith("#"))
    return units, etc, texts, mounts


def absent_strings(script):
    """String constants inside machine.fail(...) / wait_until_fails(...):
    they may name a unit this node must not have."""
    out = set()
    for n in live(ast.parse(script)):
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) in ("fail", "wait_until_fails"):
            for a in n.args:
                out.update(c.value for c in ast.walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return out


def all_units(configs):
    units = set()
    for c in configs.values():
        if c.get("evaluates"):
            units.update(c["units"], c["mountUnitNames"], c.get("initrdUnits", {}))
    return units


def check_names(test, script, configs, shipped):
    units, etc, texts, mounts = node_facts(configs, test)
    absent_ok, anywhere = absent_strings(script), all_units(configs)
    if not units:
        report(False, f"vm-script {test}: units", "no evaluated configuration of its nodes")
        return
    rendered_paths = {p.rstrip("/") for t in texts for p in PATH_RE.findall(t) if p.startswith(OWN_ROOTS)}
    # What may lie under a rendered path: a mount point's contents (the
    # lower image's files) or a leaf's (the upper layer's store objects),
    # not whatever under the overlay root.
    containers = {r for r in rendered_paths if r in mounts or not any(x.startswith(r + "/") for x in rendered_paths)}
    named, missing, paths, bad_paths = set(), [], set(), []
    for s in strings_of(script):
        for u in UNIT_RE.findall(s):
            # A unit the script asserts absent must still be one the module
            # renders somewhere (a misspelt name would pass any fail()).
            if s in absent_ok and u in anywhere:
                continue
            named.add(u)
        for p in PATH_RE.findall(s):
            if p.startswith("/etc/systemd/system/"):
                named.add(p.split("/")[4])
            elif p.startswith(OWN_ROOTS):
                paths.add(p)
    for u in sorted(named):
        if u not in units and u not in shipped:
            near = [r for r in units if r.replace("\\x2d", "-") == u]
            missing.append(u + (f" (rendered as {near[0]!r}: the script's literal lost the escape)" if near else ""))
    for p in sorted(paths):
        q = p.rstrip("/")
        if q.startswith("/etc/snix-lower-store"):
            ok = q[len("/etc/"):] in etc or any(e.startswith(q[len("/etc/"):] + "/") for e in etc)
        else:
            ok = any(q == r or r.startswith(q + "/") for r in rendered_paths) or any(q.startswith(r + "/") for r in containers)
        if not ok:
            bad_paths.append(p)
    report(not missing, f"vm-script {test}: every unit it names is rendered for its nodes or shipped by systemd",
           "; ".join(missing) if missing else f"{len(named)} units: {' '.join(sorted(named))}")
    report(not bad_paths, f"vm-script {test}: every path under the module's roots it names is one the nodes render",
           "not rendered: " + " ".join(bad_paths) if bad_paths else f"{len(paths)} paths")


def main():
    eval_json, driver_src, prepend_path, bins, out = sys.argv[1:6]
    data = json.loads(read(eval_json))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "mypy.ini"), "w") as f:
        # The driver's own modules are checked by nixpkgs, not here: only the
        # script's errors count; its third-party imports have no stubs here.
        f.write("[mypy]\nfollow_imports = silent\n"
                "[mypy-colorama.*,junit_xml.*,remote_pdb.*,ptpython.*]\nignore_missing_imports = True\n")
    symbols = driver_symbols(driver_src)
    prepend = typed_prepend(prepend_path)
    shipped = host_units()
    global expect_fail
    first = min(data["vmScripts"])
    expect_fail = True
    data["configs"].update({k.replace(f"vm-test {first}/", "vm-test selftest/", 1): c
                            for k, c in list(data["configs"].items()) if k.startswith(f"vm-test {first}/")})
    lint("selftest", BROKEN_SCRIPT, data["vmScripts"][first]["nodes"], symbols, prepend, bins, driver_src, out)
    check_names("selftest", BROKEN_SCRIPT, data["configs"], shipped)
    expect_fail = False
    for test, t in sorted(data["vmScripts"].items()):
        if t["script"] is None:
            report(False, f"vm-script {test}: the script evaluates", "testScript does not evaluate (eval.nix json.vmScripts)")
            continue
        try:
            ast.parse(t["script"])
        except SyntaxError as e:
            report(False, f"vm-script {test}: parses as Python", str(e))
            continue
        lint(test, t["script"], t["nodes"], symbols, prepend, bins, driver_src, out)
        check_names(test, t["script"], data["configs"], shipped)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
