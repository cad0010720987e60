#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv at the repository root and install cpcl into
# it, editable. With --test, the test dependencies too. Safe to run again: it only adds what
# is missing.
#   PYTHON=python3.11 bash scripts/setup.sh      pick the interpreter
#   CPCL_TORCH='torch==2.13.0' (default)          the torch requirement installed first; the
#                                                 pin keeps pip on the local CPU wheel here
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
if [[ ! -x .venv/bin/python ]]; then
  "${PYTHON:-python3}" -m venv .venv
fi
pip_install() {  # quiet on success; the whole pip log and a non-zero exit on failure
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: 'pip install $*' failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
}
pip_install "${CPCL_TORCH:-torch==2.13.0}"
pip_install -e ".${extras}"
.venv/bin/python -c "import cpcl, torch; print(f'cpcl {cpcl.__version__} ready in .venv (torch {torch.__version__})')"
