#!/usr/bin/env python3
"""Writes the checked-in seed corpora of the fuzz targets (fuzz/corpus-seeds/<target>/).

Run it after changing a target's input layout or the session fixture, then commit
the files it writes: `python3 fuzz/corpus-seeds/generate.py`. CI never runs it; it
copies these files into a scratch corpus before exploring, so the repository is not
written to.

Invariants: every seed is a real, well-formed input (a handshake Nix sends, a request
as Nix encodes it, a registration or path-info JSON as Nix prints it, a .drv as Nix
writes it); the store paths are those of the `session` target's fixture (the demo
generator's text objects, computed here exactly as the daemon computes them, and the
fixture's directory tree), so requests reach the index and the lower dir. File names
say what a seed is; their content is deterministic.
"""

import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SD = "/nix/store"
NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(b):
    n = (len(b) * 8 - 1) // 5 + 1
    out = []
    for i in range(n - 1, -1, -1):
        bit = i * 5
        j, k = divmod(bit, 8)
        c = b[j] >> k
        if j + 1 < len(b):
            c |= b[j + 1] << (8 - k)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def text_path(name, contents, refs):
    ty = "text" + "".join(":" + SD + "/" + r for r in sorted(refs))
    inner = hashlib.sha256(contents.encode()).hexdigest()
    full = hashlib.sha256(f"{ty}:sha256:{inner}:{SD}:{name}".encode()).digest()
    comp = bytearray(20)
    for i, x in enumerate(full):
        comp[i % 20] ^= x
    return nix32(bytes(comp)) + "-" + name


def fixture_paths():
    """The base names the session target's fixture indexes (demo::generate(2, 2) and more)."""
    l0 = [text_path(f"demo-l0-{w}", f"layer 0 item {w}\n", []) for w in range(2)]
    uses = "".join(f"uses {SD}/{r}\n" for r in l0)
    l1 = [text_path(f"demo-l1-{w}", f"layer 1 item {w}\n{uses}", l0) for w in range(2)]
    top = f"{SD}/{l1[0]}"
    drv_text = f'Derive([("out","{top}","","")],[],[],"x86_64-linux","/bin/sh",[],[("out","{top}")])'
    drv = text_path("demo-top.drv", drv_text, [])
    gone = text_path("fuzz-gone", "deleted after import\n", [])
    tree = "0123456789abcdfghijklmnpqrsvwxyz-fuzz-tree"
    return l0, l1, drv, drv_text, gone, tree


def u64(n):
    return struct.pack("<Q", n)


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return u64(len(b)) + b + b"\0" * (-len(b) % 8)


def ss(xs):
    return u64(len(xs)) + b"".join(s(x) for x in xs)


def requests(minor):
    """One request per op as Nix's client encodes it at protocol 1.`minor`."""
    l0, l1, drv, _, gone, tree = fixture_paths()
    p = lambda b: f"{SD}/{b}"
    missing = p("00000000000000000000000000000000-nothing")
    set_options = u64(19) + u64(0) + u64(0) + u64(0) + u64(3) + u64(0) * 8 + u64(1) + s("max-jobs") + s("1")
    q = {
        "IsValidPath": u64(1) + s(p(l1[0])),
        "IsValidPath-missing": u64(1) + s(missing),
        "IsValidPath-unicode-name": u64(1) + s(p(l0[0][:33] + "dëmo")),
        "HasSubstitutes": u64(3) + s(p(l0[0])),
        "QueryPathHash": u64(4) + s(p(l0[1])),
        "QueryReferences": u64(5) + s(p(l1[1])),
        "QueryReferrers": u64(6) + s(p(l0[0])),
        "BuildPaths": u64(9) + ss([p(l1[0]), p(drv) + "!out"]) + u64(0),
        "EnsurePath": u64(10) + s(p(tree)),
        "AddTempRoot": u64(11) + s(p(l0[0])),
        "AddIndirectRoot": u64(12) + s("/home/user/result"),
        "SyncWithGC": u64(13),
        "FindRoots": u64(14),
        "QueryDeriver": u64(18) + s(p(l1[0])),
        "SetOptions": set_options,
        "QuerySubstitutablePathInfo": u64(21) + s(p(l0[0])),
        "QueryDerivationOutputs": u64(22) + s(p(drv)),
        "QueryAllValidPaths": u64(23),
        "QueryPathInfo": u64(26) + s(p(l1[0])),
        "QueryPathInfo-tree": u64(26) + s(p(tree)),
        "QueryDerivationOutputNames": u64(28) + s(p(drv)),
        "QueryPathFromHashPart": u64(29) + s(l0[1][:32]),
        "QueryValidPaths": u64(31) + ss([p(l0[0]), missing, p(tree)]) + (u64(0) if minor >= 27 else b""),
        "QuerySubstitutablePaths": u64(32) + ss([p(l0[0])]),
        "QueryValidDerivers": u64(33) + s(p(l1[0])),
        "OptimiseStore": u64(34),
        "VerifyStore": u64(35) + u64(1) + u64(0),
        "NarFromPath": u64(38) + s(p(l0[0])),
        "NarFromPath-tree": u64(38) + s(p(tree)),
        "NarFromPath-gone": u64(38) + s(p(gone)),
        "QueryMissing": u64(40) + ss([p(drv) + "!*", missing]),
        "QueryDerivationOutputMap": u64(41) + s(p(drv)),
        "QueryRealisation": u64(43) + s("sha256:" + "0" * 64 + "!out"),
        "AddPermRoot": u64(47) + s(p(l0[0])) + s("/home/user/result"),
        "AddTextToStore": u64(8) + s("hello.txt") + s("hello\n") + ss([]),
        "AddSignatures": u64(37) + s(p(l0[0])) + ss(["cache.example.org-1:c2ln"]),
        "AddBuildLog": u64(45) + s(p(drv)) + u64(4) + b"log\n" + u64(0),
        "CollectGarbage": u64(20) + u64(0) + ss([]) + u64(0) + u64(0) + u64(0) * 3,
        "ExportPath": u64(16) + s(p(l0[0])) + u64(0),
        "ImportPaths": u64(27),
        "BuildDerivation": u64(36)
        + s(p(drv))
        + u64(1)
        + s("out")
        + s(p(l1[0]))
        + s("")
        + s("")
        + ss([])
        + s("x86_64-linux")
        + s("/bin/sh")
        + ss(["-c", "true"])
        + u64(1)
        + s("out")
        + s(p(l1[0]))
        + u64(0),
        "RegisterDrvOutput": u64(42) + s("sha256:" + "0" * 64 + "!out") + (s(p(l0[0])) if minor < 31 else b""),
        "QuerySubstitutablePathInfos": u64(30)
        + (u64(1) + s(p(l0[0])) + s("") if minor >= 22 else ss([p(l0[0])])),
    }
    if minor >= 25:
        q["AddToStore"] = u64(7) + s("x") + s("text:sha256") + ss([]) + u64(0) + u64(3) + b"abc" + u64(0)
    if minor >= 23:
        q["AddToStoreNar"] = (
            u64(39) + s(p(l0[0])) + s("") + s("0" * 64) + ss([]) + u64(0) + u64(0) + u64(0) + ss([]) + s("")
        ) + u64(0) + u64(0) + u64(0)
    if minor >= 32:
        q["AddMultipleToStore"] = u64(44) + u64(0) + u64(0) + u64(0)
    if minor >= 34:
        q["BuildPathsWithResults"] = u64(46) + ss([p(drv) + "!out"]) + u64(0)
    return q


def handshake(minor):
    """What Nix's client sends to open a connection at protocol 1.`minor`."""
    h = u64(0x6E697863) + u64((1 << 8) | minor)
    if minor >= 38:
        h += ss([])
    return h + u64(0) + u64(0)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def nar_of_file(contents, executable=False):
    out = s("nix-archive-1") + s("(") + s("type") + s("regular")
    if executable:
        out += s("executable") + s("")
    return out + s("contents") + s(contents) + s(")")


def main():
    l0, l1, drv, drv_text, _, tree = fixture_paths()
    # session: byte 0 picks protocol 1.(19 + b % 22); the rest is the op stream.
    for minor in (21, 25, 26, 31, 37, 38):
        for name, req in requests(minor).items():
            if minor == 38 or name in ("QueryPathInfo", "NarFromPath", "QueryValidPaths", "SetOptions", "AddToStore"):
                write("session", f"1.{minor}-{name}", bytes([minor - 19]) + req)
    q = requests(38)
    write("session", "1.38-client-session", bytes([38 - 19]) + q["SetOptions"] + q["QueryPathInfo"] + q["NarFromPath"])
    write("session", "1.38-refusal-then-query", bytes([38 - 19]) + q["AddTextToStore"] + q["IsValidPath"])
    write("session", "1.19-too-old", bytes([0]))
    write("session", "1.40-newer", bytes([40 - 19]) + q["QueryAllValidPaths"])
    # worker_requests: byte 0 picks protocol 1.(21 + b % 18); no handshake.
    versioned = ("QueryValidPaths", "QuerySubstitutablePathInfos", "AddToStore", "AddToStoreNar", "RegisterDrvOutput")
    for minor in (21, 22, 26, 31, 38):
        for name, req in requests(minor).items():
            if minor == 38 or name in versioned:
                write("worker_requests", f"1.{minor}-{name}", bytes([minor - 21]) + req)
    # handshake: the client's opening at each layout change.
    for minor in (10, 21, 25, 26, 33, 35, 37, 38):
        write("handshake", f"1.{minor}", handshake(minor))
    # framed_and_nar: a framed stream (new AddToStore) and a NAR (old AddToStore).
    write("framed_and_nar", "framed", u64(3) + b"abc" + u64(0))
    write("framed_and_nar", "nar-file", nar_of_file("hello\n"))
    write("framed_and_nar", "nar-executable", nar_of_file("#!/bin/sh\n", executable=True))
    link = s("nix-archive-1") + s("(") + s("type") + s("symlink") + s("target") + s("share/doc") + s(")")
    write("framed_and_nar", "nar-symlink", link)
    # importers: `nix-store --dump-db` registrations and `nix path-info --json` output.
    h = "sha256:" + "1" * 52
    reg = f"{SD}/{l1[0]}\n{h}\n120\n{SD}/{drv}\n2\n{SD}/{l0[0]}\n{SD}/{l0[1]}\n"
    reg += f"{SD}/{l0[0]}\n{h}\n112\n\n0\n"
    write("importers", "registration", reg)
    info = {
        "deriver": f"{SD}/{drv}",
        "narHash": "sha256-" + "A" * 43 + "=",
        "narSize": 120,
        "references": [f"{SD}/{l0[0]}"],
        "registrationTime": 1700000000,
        "signatures": ["cache.example.org-1:c2lnbmF0dXJl"],
        "ultimate": False,
        "ca": None,
    }
    write("importers", "path-info-object", json.dumps({f"{SD}/{l1[0]}": info}))
    write("importers", "path-info-list", json.dumps([dict(info, path=f"{SD}/{l1[0]}", valid=True)]))
    # drv: the demo derivation and a multi-output one with a floating CA output.
    write("drv", "demo-top.drv", drv_text)
    multi = (
        f'Derive([("dev","{SD}/{l0[0]}","",""),("out","{SD}/{l0[1]}","",""),'
        f'("doc","","r:sha256","")],[("{SD}/{drv}",["out"])],["{SD}/{tree}"],'
        '"x86_64-linux","/bin/sh",["-c","echo \\"hi\\"\\n"],[("out","x")])'
    )
    write("drv", "multi-output.drv", multi)


if __name__ == "__main__":
    main()
