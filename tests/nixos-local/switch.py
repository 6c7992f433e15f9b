#!/usr/bin/env python3
"""What `switch-to-configuration switch` (switch-to-configuration-ng) would
stop, skip, reload, restart and start when going from the running
configuration to a new one, decided as its main.rs decides
(../shared/nixpkgs/pkgs/by-name/sw/switch-to-configuration-ng/src/src/main.rs
at 00401fd7e581; line numbers below are that file's).

  switch.py plan CUR_UNITS NEW_UNITS SHIPPED CUR_FSTAB NEW_FSTAB ACTIVE_JSON
  switch.py selftest      (one PASS/FAIL line per decision, on unit texts)

CUR_UNITS / NEW_UNITS  the running and the new /etc/systemd/system;
SHIPPED                systemd's own units (the root's /usr/lib/systemd/system):
                       on NixOS every unit, systemd's own too, is linked in
                       /etc/systemd/system; here the Debian root keeps those
                       in /usr/lib, the same for both configurations, so a
                       unit not in CUR_UNITS / NEW_UNITS is looked up there;
CUR_FSTAB / NEW_FSTAB  the running and the new /etc/fstab;
ACTIVE_JSON            `busctl --json=short call ... ListUnitsByPatterns as as
                       0 0` in the running system (the D-Bus call main.rs's
                       get_active_units makes, l. 212-262).

Prints {"stop": [...], "skip": [...], "reload": [...], "restart": [...],
"start": [...]} as JSON. What is not modelled: template instances (l. 1376),
nspawn containers (l. 1275-1360), the activation script's own restart lists
(l. 1766-1837), sysinit-reactivation.target (l. 1912), user units.

Invariant: reads only; the harness (tests/nixos-local/run, part switch)
carries the plan out in that order: stop, activate (new units and /etc),
daemon-reload, reset-failed, reload (an inactive one started instead),
restart, start (l. 1712-2064).
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from textfiles import read  # noqa: E402

TRUE = ("1", "yes", "true", "on")


def parse_ini(data, text):
    """l. 263-333: sections -> key -> values; an empty value clears;
    [Install] skipped; no escape processing, quotes kept."""
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section is None or section == "Install" or "=" not in line:
            continue
        key, val = (s.strip() for s in line.split("=", 1))
        sec = data.setdefault(section, {})
        if val == "":
            sec[key] = []
        else:
            sec.setdefault(key, []).append(val)
    return data


def parse_unit(path):
    """l. 335-378: the unit and its <unit>.d/*.conf drop-ins."""
    data = parse_ini({}, read(path))
    for d in sorted(glob.glob(path + ".d/*.conf")):
        parse_ini(data, read(d))
    return data


def sd_bool(info, section, key, default):
    """l. 380-399: the last value decides."""
    vals = (info or {}).get(section, {}).get(key)
    return vals[-1] in TRUE if vals else default


UNIT_IGNORES = {
    "X-Reload-Triggers", "Description", "Documentation", "OnFailure", "OnSuccess", "OnFailureJobMode",
    "IgnoreOnIsolate", "StopWhenUnneeded", "RefuseManualStart", "RefuseManualStop", "AllowIsolate",
    "CollectMode", "SourcePath",
}


def compare_units(cur, new):
    """l. 427-558: "equal", "restart" or "reload" (only X-Reload-Triggers or
    [Mount] Options differ)."""
    ret = "equal"
    new_sections = set(new)
    for sec, vals in cur.items():
        if sec not in new:
            if sec == "Unit" and all(k in UNIT_IGNORES for k in vals):
                continue
            return "restart"
        new_sections.discard(sec)
        new_keys = set(new[sec])
        for key, cv in vals.items():
            new_keys.discard(key)
            if key not in new[sec]:
                if sec == "Unit" and key in UNIT_IGNORES:
                    continue
                return "restart"
            if cv != new[sec][key]:
                if sec == "Unit" and key == "X-Reload-Triggers":
                    ret = "reload"
                    continue
                if sec == "Unit" and key in UNIT_IGNORES:
                    continue
                if sec == "Mount" and key == "Options":
                    ret = "reload"
                    continue
                return "restart"
        if new_keys:
            if sec != "Unit":
                return "restart"
            for key in new_keys:
                if key == "X-Reload-Triggers":
                    ret = "reload"
                elif key not in UNIT_IGNORES:
                    return "restart"
    if new_sections:
        if new_sections != {"Unit"}:
            return "restart"
        for key in new["Unit"]:
            if key not in UNIT_IGNORES:
                return "restart"
            if key == "X-Reload-Triggers":
                ret = "reload"
    return ret


class Plan:
    def __init__(self, cur_dir, new_dir, shipped, active):
        self.cur_dir, self.new_dir, self.shipped, self.active = cur_dir, new_dir, shipped, active
        self.stop, self.skip, self.reload, self.restart, self.start = (set() for _ in range(5))

    def cur_file(self, unit):
        p = os.path.join(self.cur_dir, unit)
        return p if os.path.lexists(p) else os.path.join(self.shipped, unit)

    def new_file(self, unit):
        p = os.path.join(self.new_dir, unit)
        return p if os.path.lexists(p) else os.path.join(self.shipped, unit)

    def modified(self, unit, new_info):
        """handle_modified_unit, l. 617-794 (new_info is given: the
        use_restart_as_stop_and_start branch is not taken)."""
        base = unit.rsplit(".", 1)[0]
        if unit in ("sysinit.target", "basic.target", "multi-user.target", "graphical.target") or unit.endswith(
            (".unit", ".slice")
        ):
            return  # l. 634-642: cannot be restarted directly
        if unit.endswith(".mount"):
            # l. 643-655: restarted; / and /nix reloaded instead.
            (self.reload if unit in ("-.mount", "nix.mount") else self.restart).add(unit)
            return
        if unit.endswith(".socket"):
            return  # l. 656-660: a changed socket unit is left as it is
        if sd_bool(new_info, "Service", "X-ReloadIfChanged", False) and unit not in self.restart and unit not in self.stop:
            self.reload.add(unit)  # l. 673-682
        elif (
            not sd_bool(new_info, "Service", "X-RestartIfChanged", True)
            or sd_bool(new_info, "Unit", "RefuseManualStop", False)
            or sd_bool(new_info, "Unit", "X-OnlyManualStart", False)
        ):
            self.skip.add(unit)  # l. 683-688
        elif not sd_bool(new_info, "Service", "X-StopIfChanged", True) or not unit.endswith(".service"):
            self.restart.add(unit)  # l. 691-700
            self.reload.discard(unit)
        else:
            # l. 701-791: stopped and started; a socket-activated service's
            # active sockets are stopped and started instead of it.
            socket_activated = False
            sockets = " ".join(new_info.get("Service", {}).get("Sockets", [])).split() or [base + ".socket"]
            for sock in sockets:
                if sock in self.active:
                    self.stop.add(sock)
                    if os.path.lexists(os.path.join(self.new_dir, sock)):
                        self.start.add(sock)
                        socket_activated = True
                    self.reload.discard(unit)
            if sd_bool(new_info, "Service", "X-NotSocketActivated", False):
                socket_activated = False
            if not socket_activated:
                self.start.add(unit)
            self.stop.add(unit)
            self.reload.discard(unit)

    def units(self):
        """l. 1363-1487: every active unit of the running configuration."""
        for unit, state in sorted(self.active.items()):
            cur = self.cur_file(unit)
            if not os.path.exists(cur) or state not in ("active", "activating"):
                continue
            new = self.new_file(unit)
            if not os.path.exists(new) or os.path.realpath(new) == "/dev/null":
                # l. 1404-1413: gone from the new configuration.
                if sd_bool(parse_unit(cur), "Unit", "X-StopOnRemoval", True):
                    self.stop.add(unit)
            elif unit.endswith(".target"):
                # l. 1414-1458: active targets are started again (pulling in
                # new units, mounts included).
                info = parse_unit(new)
                if not (
                    unit in ("suspend.target", "hibernate.target", "hybrid-sleep.target")
                    or sd_bool(info, "Unit", "RefuseManualStart", False)
                    or sd_bool(info, "Unit", "X-OnlyManualStart", False)
                ):
                    self.start.add(unit)
                if sd_bool(info, "Unit", "X-StopOnReconfiguration", False):
                    self.stop.add(unit)
            else:
                new_info = parse_unit(new)
                cmp = compare_units(parse_unit(cur), new_info)
                if cmp == "restart":
                    self.modified(unit, new_info)
                elif cmp == "reload" and unit not in self.restart:
                    self.reload.add(unit)

    def fstab(self, cur_text, new_text):
        """l. 1489-1530: entries whose device or type changed are restarted
        (/ and /nix: reloaded or skipped), changed options reloaded, gone
        ones stopped."""
        cur, new = parse_fstab(cur_text), parse_fstab(new_text)
        for mp, fs in cur.items():
            unit = subprocess.run(["systemd-escape", "--suffix=mount", "-p", mp], check=False, capture_output=True, text=True).stdout.strip()
            if mp in new:
                n = new[mp]
                if fs[:2] != n[:2]:
                    if mp in ("/", "/nix"):
                        (self.reload if fs[2] != n[2] else self.skip).add(unit)
                    else:
                        self.restart.add(unit)
                elif fs[2] != n[2]:
                    self.reload.add(unit)
            else:
                self.stop.add(unit)

    def json(self):
        return json.dumps({k: sorted(getattr(self, k)) for k in ("stop", "skip", "reload", "restart", "start")})


def parse_fstab(text):
    """l. 848-892: mount point -> (device, type, options); lines with '#'
    skipped, swap left out."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if "#" in line or len(f) < 3 or f[2] == "swap":
            continue
        out[f[1]] = (f[0], f[2], f[3] if len(f) > 3 else "")
    return out


def active_units(busctl_json):
    """l. 212-262: units whose ActiveState is not inactive and that follow
    no other unit."""
    data = json.loads(busctl_json)["data"][0]
    return {u[0]: u[3] for u in data if u[5] == "" and u[3] != "inactive"}


def selftest():
    """The decisions this harness relies on, each on two unit texts; prints
    one PASS/FAIL line each (the run script counts them)."""
    svc = "[Unit]\nDescription=a\n[Service]\nExecStart=/bin/a\n"
    cases = [
        ("a Description change alone leaves a unit alone (l. 430-447, 506-507)", svc, svc.replace("=a\n", "=b\n", 1), "equal"),
        ("an ExecStart change restarts (l. 517)", svc, svc.replace("/bin/a", "/bin/b"), "restart"),
        ("an X-Reload-Triggers change reloads (l. 503-505)", svc + "[Unit]\nX-Reload-Triggers=1\n",
         svc + "[Unit]\nX-Reload-Triggers=2\n", "reload"),
        ("a new [Service] key restarts (l. 533-534)", svc, svc + "Environment=A=1\n", "restart"),
        ("a mount's Options change reloads (l. 512-515)", "[Mount]\nWhat=/a\nOptions=ro\n",
         "[Mount]\nWhat=/a\nOptions=rw\n", "reload"),
        ("a mount's What change restarts (l. 517)", "[Mount]\nWhat=/a\n", "[Mount]\nWhat=/b\n", "restart"),
        ("an empty value clears the earlier ones (l. 308-320)", svc + "Environment=A=1\nEnvironment=\n",
         svc + "Environment=\n", "equal"),
    ]
    bad = 0
    for name, a, b, want in cases:
        got = compare_units(parse_ini({}, a), parse_ini({}, b))
        print(("PASS" if got == want else "FAIL") + f" switch.py compare_units: {name}" + ("" if got == want else f": {got}, want {want}"))
        bad += got != want
    with tempfile.TemporaryDirectory() as new_dir:
        runs = []
        for with_socket in (True, False):
            if with_socket:
                open(os.path.join(new_dir, "x.socket"), "w").close()
            elif os.path.exists(os.path.join(new_dir, "x.socket")):
                os.unlink(os.path.join(new_dir, "x.socket"))
            plan = Plan("/nonexistent", new_dir, "/nonexistent", {"x.socket": "active"})
            plan.modified("x.socket", {})
            plan.modified("x.service", {"Service": {}})
            runs.append(plan)
    ok = (
        runs[0].stop == {"x.socket", "x.service"} and runs[0].start == {"x.socket"} and not runs[0].restart
        and runs[1].stop == {"x.socket", "x.service"} and runs[1].start == {"x.service"}
    )
    print(("PASS" if ok else "FAIL") + " switch.py handle_modified_unit: a changed socket is left alone; a changed"
          " socket-activated service stops its socket and starts it again, or starts the service when the new"
          " configuration has no such socket (l. 656-791)" + ("" if ok else f": {runs[0].json()} {runs[1].json()}"))
    bad += not ok
    sys.exit(1 if bad else 0)


def main():
    if sys.argv[1:] == ["selftest"]:
        selftest()
    if sys.argv[1] != "plan" or len(sys.argv) != 8:
        raise SystemExit("usage: switch.py plan CUR_UNITS NEW_UNITS SHIPPED CUR_FSTAB NEW_FSTAB ACTIVE_JSON")
    cur_dir, new_dir, shipped, cur_fstab, new_fstab, active_json = sys.argv[2:8]
    plan = Plan(cur_dir, new_dir, shipped, active_units(read(active_json)))
    plan.units()
    plan.fstab(read(cur_fstab), read(new_fstab))
    print(plan.json())


if __name__ == "__main__":
    main()
