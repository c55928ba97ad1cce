#!/usr/bin/env bash
# Set up notagen on a fresh Debian machine with Python 3.11: system packages, a virtual environment in .venv,
# the CPU build of torch, and notagen itself. `--test` also installs the test dependencies.
#   bash scripts/setup.sh          # to use notagen
#   bash scripts/setup.sh --test   # to run the tests
set -euo pipefail
cd "$(dirname "$0")/.."

# The studio (`notagen serve`) is part of every install; --test adds the test tools.
extras="[serve]"
[ "${1:-}" = "--test" ] && extras="[test,serve]"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Audio (fluidsynth + a small General MIDI soundfont), SVG → PNG, venv support, and the outside judges of a valid
# piece (abc2midi, abcm2ps: `notagen check --judges`, the tests). --no-install-recommends keeps fluidsynth at ~11 MB
# instead of ~250 MB.
packages="fluidsynth timgm6mb-soundfont librsvg2-bin python3-venv abcmidi abcm2ps"
# The studio's browser test drives headless Chromium through chromedriver (WebDriver over HTTP).
if [ "${1:-}" = "--test" ]; then packages="$packages chromium chromium-driver"; fi
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

python=$(command -v python3.11 || command -v python3)
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".${extras}"
echo "notagen is installed in .venv ($(.venv/bin/notagen --version))"
