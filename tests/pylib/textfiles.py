"""Whole-file text reads and writes for the test scripts run as programs
(tests/nixos-local/switch.py, tests/vm-scripts/check.py), which put this
folder on sys.path themselves.

Invariant: the default encoding and newline handling of open(), as the
scripts had it; a missing file raises as open() does.
"""


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
