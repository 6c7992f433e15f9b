#!/usr/bin/env python3
"""tests/nix-parse, check 3: every services.snix-lower-store option path the
given files set is among the declared ones (JSON list in $DECLARED).
Prints the count, or the undeclared paths with their files (exit 1)."""
import json, os, re, sys

declared = set(json.loads(os.environ["DECLARED"]))

def assignments(text, start):
    """Dotted keys assigned inside the attrset opening at text[start] == '{'."""
    out, stack, key_start, i, depth = [], [], None, start + 1, 1
    while i < len(text) and depth > 0:
        c = text[i]
        if text.startswith("''", i):
            j = text.find("''", i + 2)
            while j != -1 and (text.startswith("'''", j) or text.startswith("''$", j)):
                j = text.find("''", j + 3)
            i = (j + 2) if j != -1 else len(text)
            continue
        if c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "#":
            i = text.find("\n", i)
            i = len(text) if i == -1 else i
            continue
        if c in "[(":
            # values: skip to the matching bracket
            close = "])"["[(".index(c)]
            d = 0
            while i < len(text):
                if text[i] == c: d += 1
                elif text[i] == close:
                    d -= 1
                    if d == 0: break
                i += 1
            i += 1
            continue
        m = re.compile(r"([A-Za-z_][\w.-]*)\s*=(?!=)\s*").match(text, i)
        if m and (i == 0 or not re.match(r"[\w.-]", text[i - 1])):
            key = m.group(1).split(".")
            j = m.end()
            if text.startswith("{", j) and depth == len(stack) + 1:
                stack.append(key)
                depth += 1
                i = j + 1
                continue
            out.append(".".join(sum(stack, []) + key))
            # skip the value up to the ';' at this level
            d, k = 0, j
            while k < len(text):
                if text.startswith("''", k):
                    e = text.find("''", k + 2)
                    k = (e + 2) if e != -1 else len(text)
                    continue
                if text[k] == '"':
                    k += 1
                    while k < len(text) and text[k] != '"':
                        k += 2 if text[k] == "\\" else 1
                    k += 1
                    continue
                if text[k] in "{[(": d += 1
                elif text[k] in "}])": d -= 1
                elif text[k] == ";" and d == 0: break
                k += 1
            i = k + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if stack and depth == len(stack):
                stack.pop()
        i += 1
    return out

used = {}
for path in sys.argv[1:]:
    text = open(path).read()
    for m in re.finditer(r"(?<!systemd\.)services\.snix-lower-store\.([A-Za-z][\w.-]*[\w])", text):
        used.setdefault(m.group(1), path)
    for m in re.finditer(r"(?:services\.snix-lower-store\s*=|\brefused)\s*\{", text):
        for k in assignments(text, m.end() - 1):
            used.setdefault(k, path)

missing = sorted(k for k in used if k not in declared)
if missing:
    print("not declared: " + ", ".join(f"{k} ({used[k]})" for k in missing))
    sys.exit(1)
print(f"{len(used)} option paths used, all among the {len(declared)} declared")
