#!/usr/bin/env bash
# Make `uv` available on a machine that may have nothing but python3 (a fresh Debian).
# Tries, in order: uv already on PATH; `pip install --user uv` (~/.local/bin); a venv of its own
# at ~/.cache/infergate/uv-venv (for when pip refuses --user installs under PEP 668, or is
# missing). The Makefile puts both directories on PATH.
set -euo pipefail

venv="${HOME}/.cache/infergate/uv-venv"

if command -v uv >/dev/null 2>&1 || [ -x "${venv}/bin/uv" ] || [ -x "${HOME}/.local/bin/uv" ]; then
    exit 0
fi

echo "bootstrap-uv: installing uv" >&2
if python3 -m pip install --user --quiet --disable-pip-version-check uv 2>/dev/null && [ -x "${HOME}/.local/bin/uv" ]; then
    exit 0
fi

make_venv() { rm -rf "${venv}" && python3 -m venv "${venv}"; }
if ! make_venv 2>/dev/null; then
    # Debian splits ensurepip (which venv needs) into python3-venv.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y python3-venv || { apt-get update && apt-get install -y python3-venv; }
        make_venv
    else
        echo "bootstrap-uv: cannot create a venv; install python3-venv (or uv) first" >&2
        exit 1
    fi
fi
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check uv
