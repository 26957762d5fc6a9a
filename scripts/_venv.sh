# Shared by scripts/run and scripts/test: make ./.venv with uv and install the project into it.
#
# Fast path: when pyproject.toml, the extras and the venv's Python are what the last install saw (a stamp
# file in the venv), nothing is installed again, so `scripts/run --transport stdio` started by an editor
# answers at once. The install is editable, so source changes need no reinstall either.
# A venv whose Python is broken (moved, deleted) or older than 3.11 is recreated.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"

# The first Python >= 3.11 on PATH (or $PYTHON when set).
find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  echo "scripts: Python 3.11 or newer (with venv) is needed; set PYTHON=/path/to/python3.11" >&2
  return 1
}

venv_is_usable() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

install_stamp() {
  # What an install depends on: the project metadata, the interpreter (the extras name the stamp file) and how
  # it installs (a venv installed before bytecode was compiled at install time is installed once more).
  { cksum <"$ROOT/pyproject.toml"; "$VENV/bin/python" -c 'import sys; print(sys.version, sys.base_prefix)'; } 2>/dev/null
  echo "bytecode compiled"
}

installed() {
  # True when an install with these extras (or, for none, with any extras) matches the current stamp.
  local extras="$1" stamp current
  local -a stamps
  current="$(install_stamp)"
  if [ -z "$extras" ]; then stamps=("$VENV"/.install-stamp*); else stamps=("$VENV/.install-stamp$extras"); fi
  for stamp in "${stamps[@]}"; do
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$current" ]; then
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  local extras="$1"
  if ! venv_is_usable; then
    if [ -e "$VENV" ]; then
      echo "scripts: $VENV has no working Python 3.11+; recreating it" >&2
      rm -rf "$VENV"
    fi
    "$(find_python)" -m venv "$VENV"
  fi
  if installed "$extras"; then
    return 0
  fi
  local uv="$VENV/bin/uv"
  if [ ! -x "$uv" ]; then
    if command -v uv >/dev/null 2>&1; then
      uv="$(command -v uv)"  # uv already installed (pip install uv, or the official installer)
    else
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.5" >&2
    fi
  fi
  # --compile-bytecode: every process (each server a test starts, an editor's stdio server) reads .pyc files
  # instead of compiling openai/mcp/numpy/pydantic from source at each start, which it does where
  # PYTHONDONTWRITEBYTECODE is set (as on the test machines): a server then starts in 2.4-5.6 s, not 11-32 s (busy 2 cores)
  "$uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" -e "$ROOT$extras" >&2
  install_stamp >"$VENV/.install-stamp$extras"
}
