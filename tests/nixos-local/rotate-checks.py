#!/usr/bin/env python3
"""The checks of issue 21 (image rotation) on snix-lower-store-reconcile.service
in the configurations of rotate.nix, evaluated with nixpkgs' real lib: its place
among the units (after the gate, the socket and the overlay; before nix-daemon
in the system store; re-run with every start of the gate), root with only Nix's
state, the merged store and the upper layer writable, the command line its
script runs, and the system store's refusal of "refuse".

  rotate-checks.py ROTATE_JSON STORE_ROOT

One PASS/FAIL line per check (the harness, part rotate, counts them).
Invariant: reads only.
"""
import json, re, shlex, sys

r = json.load(open(sys.argv[1]))
store_root = sys.argv[2]
R = "snix-lower-store-reconcile.service"


def unit(text):
    """systemd unit text -> {section: {key: [values]}} (space-separated
    lists split, as systemd reads Requires=/After=/...)."""
    out, sec = {}, None
    for line in (text or "").splitlines():
        m = re.match(r"^\[(.+)\]$", line)
        if m:
            sec = out.setdefault(m.group(1), {})
        elif "=" in line and sec is not None:
            k, v = line.split("=", 1)
            sec.setdefault(k, []).append(v)
    return out


def words(u, sec, key):
    return [w for v in u.get(sec, {}).get(key, []) for w in v.split()]


def script_args(u):
    """The reconcile command line inside the unit's ExecStart script."""
    start = u["Service"]["ExecStart"][-1]
    text = open(store_root + start).read()
    line = next(l for l in text.splitlines() if " reconcile " in l)
    return shlex.split(line.split(" || ")[0])


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + "21 rotate " + name + ("" if ok else ": " + detail))


for name in ["second-store", "second-store-invalidate", "second-store-state", "second-store-image", "system-store"]:
    c = r[name]
    check(f"{name}: evaluates without a failed assertion", not c["failedAssertions"], "; ".join(c["failedAssertions"]))
    u = unit(c["units"][R])
    if not u:
        check(f"{name}: {R} exists", False, "no such unit")
        continue
    system = c["placement"] == "system-store"
    gate = "snix-lower-store-check.service" if name.endswith("-image") else "snix-lower-store-import.service"
    overlay = [] if system else ["var-lib-snix\\x2doverlay-nix-store.mount"]
    need = [gate, "snix-lower-store.socket"] + overlay
    bad = [f"Requires= lacks {x}" for x in need if x not in words(u, "Unit", "Requires")]
    bad += [f"After= lacks {x}" for x in need if x not in words(u, "Unit", "After")]
    bad += [] if words(u, "Unit", "PartOf") == [gate] else [f"PartOf= {words(u, 'Unit', 'PartOf')}, want {gate}"]
    bad += [] if "multi-user.target" in words(u, "Install", "WantedBy") else ["not wanted by multi-user.target"]
    g = unit(c["units"][gate])
    bad += [] if R in words(g, "Unit", "Wants") else [f"{gate} does not want it (a new index would wait for the next boot)"]
    svc = u["Service"]
    bad += [f"{k}={svc[k]}" for k in ("User", "DynamicUser") if k in svc]
    bad += [] if svc.get("Type") == ["oneshot"] and svc.get("RemainAfterExit") == ["true"] else ["not a oneshot that remains"]
    bad += [] if svc.get("ProtectSystem") == ["strict"] else ["ProtectSystem is not strict"]
    if system:
        bad += [] if "nix-daemon.service" in words(u, "Unit", "Before") else ["not Before=nix-daemon.service"]
        d = unit(c["units"]["nix-daemon.service"])
        bad += [f"nix-daemon.service {k}= lacks it" for k in ("Wants", "After") if R not in words(d, "Unit", k)]
        bad += [f"nix-daemon.service Requires= it (a failed reconcile would leave the system without Nix)" for _ in [0] if R in words(d, "Unit", "Requires")]
        bad += [] if u["Unit"].get("ConditionPathIsMountPoint") == ["/nix/.snix-lower"] else ["no ConditionPathIsMountPoint=/nix/.snix-lower"]
    else:
        bad += [] if "nix-daemon.service" not in words(u, "Unit", "Before") else ["second store: ordered before nix-daemon"]
    check(f"{name}: after {', '.join(need)}, re-run with every start of {gate}{', before nix-daemon (which wants it)' if system else ''}; root, oneshot", not bad, "; ".join(bad))

    args = script_args(u)
    opt = {args[i]: args[i + 1] for i in range(2, len(args) - 1) if args[i].startswith("--")}
    state = "/nix/var/nix" if system else ("/srv/nix-state" if name.endswith("-state") else "/var/lib/snix-overlay/nix/var/nix")
    want = {
        "--store-url": c["storeUrl"],
        "--nix-store": c["nixStore"],
        "--on-broken": "invalidate" if name in ("system-store", "second-store-invalidate") else "refuse",
        "--settled-file": state + "/snix-lower-store-settled",
    }
    if name.endswith("-image"):
        want["--index"] = "/var/lib/snix-overlay/lower/.snix-lower-store/index"
    bad = [f"{k} {opt.get(k)!r}, want {v!r}" for k, v in want.items() if opt.get(k) != v]
    bad += [f"unexpected {k}" for k in opt if k not in want]
    bad += [] if args[1] == "reconcile" else [f"subcommand {args[1]}"]
    check(f"{name}: runs reconcile {' '.join(k + ' ' + v for k, v in want.items() if k != '--store-url')} on the module's store URL", not bad, "; ".join(bad) + f" (args {args})")

    rw = [w.lstrip("-") for w in words(u, "Service", "ReadWritePaths")]
    need_rw = [state, "/nix/store" if system else "/var/lib/snix-overlay/nix/store", "/nix/.snix-rw/upper" if system else "/var/lib/snix-overlay/upper"]
    # The index's directory (SQLite's -shm of the import's WAL database).
    need_rw += [] if name.endswith("-image") else ["/var/lib/snix-lower-store"]
    bad = [p for p in need_rw if not any(p == w or p.startswith(w.rstrip("/") + "/") for w in rw)]
    # Nix's var dir (its state by default, and its logs) may be writable too.
    allowed = need_rw + ["/nix/var" if system else "/var/lib/snix-overlay/nix/var"]
    bad += [w for w in rw if not any(w == p or w.startswith(p.rstrip("/") + "/") for p in allowed)]
    check(f"{name}: writes only Nix's state and var dir, the merged store, the upper layer and the index's directory", not bad, f"ReadWritePaths={rw}, wrong or missing: {bad}")

c = r["system-store-refuse"]
msgs = [m for m in c["failedAssertions"] if m.startswith('services.snix-lower-store.lower.onBrokenPaths = "refuse" with placement = "system-store"')]
check('system-store with lower.onBrokenPaths = "refuse" is refused by its own assertion', len(msgs) == 1 and len(c["failedAssertions"]) == 1, json.dumps(c["failedAssertions"]))
