#!/usr/bin/env bash
# Install the Autobahn|Testsuite (wstest, incl. the "fuzzingserver" that tests
# WebSocket CLIENTS) into a Python 3 venv.
#
#   usage: install.sh [VENV_DIR]        (default: .autobahn-venv)
#   env:   PYTHON=python3               interpreter used to create the venv
#
# autobahntestsuite on PyPI (latest 25.10.1) is Python-2-only code and its wheel
# declares no dependencies, so a plain `pip install` gives a wstest that dies
# with "No module named '_version'".  This script installs it with the pinned
# autobahn 0.10.9 it was written for, converts it mechanically with fissix
# (lib2to3 fork, so it also works where lib2to3 is gone) and then applies the
# hand-written fixes in py3port.py (bytes/str, integer division, ...).
#
# Every transitive package is pinned too (constraints.txt next to this script).
#
# Idempotent: a stamp file records the hash of this script + py3port.py + constraints.txt; when it
# matches and wstest starts, nothing is done.  Needs only python3 (with venv or
# pip) and access to PyPI.
set -euo pipefail

VENV="${1:-.autobahn-venv}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT_SCRIPT="$HERE/py3port.py"
CONSTRAINTS="$HERE/constraints.txt"
STAMP="$VENV/.autobahn-py3port.stamp"

# Tested pins (Python 3.11, 3.12, 3.13). autobahn 0.10.9 + txaio 2.1.0 are what
# autobahntestsuite was written against; Twisted can be current.
PINS=(
  "autobahntestsuite==25.10.1"
  "autobahn==0.10.9"
  "txaio==2.1.0"
  "six==1.17.0"
  "Twisted[tls]==26.10.0"   # [tls]: twisted.internet.ssl is imported unconditionally
  "jinja2==3.1.6"           # imported by autobahntestsuite/report.py
  "fissix==24.4.24"         # build-time: lib2to3 fork for the py2->py3 pass
)

for f in "$PORT_SCRIPT" "$CONSTRAINTS"; do
  [ -f "$f" ] || { echo "install.sh: missing $f" >&2; exit 2; }
done
want="$(cat "$HERE/install.sh" "$PORT_SCRIPT" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VENV/bin/wstest" -a >/dev/null 2>&1; then
  echo "autobahn: already installed in $VENV ($("$VENV/bin/wstest" -a 2>/dev/null | tr '\n' ' '))"
  exit 0
fi

# 1. venv (fall back to --without-pip + the system pip when ensurepip is missing,
#    e.g. Debian without python3-venv)
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    echo "autobahn: '$PYTHON -m venv' failed; retrying --without-pip" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV"
  fi
fi
VPY="$VENV/bin/python"
if ! "$VPY" -m pip --version >/dev/null 2>&1; then
  # pip >= 22.3 can install into another interpreter's environment
  "$PYTHON" -m pip --python "$VPY" install -q pip
fi
pipi() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

# 2. packages; force-reinstall the two patched ones so patching starts from
#    pristine upstream files (this is what makes a re-run safe)
pipi -c "$CONSTRAINTS" "${PINS[@]}"
pipi --force-reinstall --no-deps "autobahntestsuite==25.10.1" "autobahn==0.10.9"

SP="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# 3. mechanical py2 -> py3 conversion (print, except, relative imports, dict views, ...)
"$VPY" -m fissix -w -n --no-diffs "$SP/autobahntestsuite" >/dev/null 2>&1 \
  || { echo "autobahn: fissix conversion failed" >&2; exit 1; }

# 4. hand-written fixes
"$VPY" "$PORT_SCRIPT" "$SP"
find "$SP/autobahntestsuite" "$SP/autobahn" -name __pycache__ -type d -prune -exec rm -rf {} +
"$VPY" -W ignore::SyntaxWarning -m compileall -q "$SP/autobahntestsuite" "$SP/autobahn" >/dev/null

# 5. smoke test: the package imports and all test cases load
"$VENV/bin/wstest" -a
"$VPY" - <<'EOF'
from autobahntestsuite import case
n = len(case.Cases)
assert n == 517, "expected 517 test cases, found %d" % n
print("autobahn: %d test cases load" % n)
EOF

echo "$want" > "$STAMP"
echo "autobahn: installed in $VENV"
