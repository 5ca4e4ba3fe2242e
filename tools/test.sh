#!/usr/bin/env bash
# Install ZooDesk with its test and development tools into .venv, then run the checks
# and the test-suite.  This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,convert,tensorflow]"
# The RO-Crate validator used by the export tests pins rich<14, which clashes with
# ZooDesk's rich: it gets an environment of its own (inside .venv, so it is ignored).
if [ ! -x .venv/rocrate-validator/bin/python ]; then
  "$PYTHON" -m venv .venv/rocrate-validator
fi
.venv/rocrate-validator/bin/python -m pip install --quiet roc-validator==0.13.0
# The BioImage Archive's own validator needs Python 3.13 or newer: another environment.
if [ -z "${PYTHON313:-}" ]; then
  for candidate in python3.13 python3.14 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python; do
    # A pyenv shim exists without the version behind it: ask the interpreter itself.
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null; then
      PYTHON313="$candidate"
      break
    fi
  done
fi
if [ -z "${PYTHON313:-}" ]; then
  echo "tools/test.sh: the BioImage Archive's validator needs Python 3.13 or newer; set PYTHON313" >&2
  exit 1
fi
if [ ! -x .venv/bia-validator/bin/python ]; then
  "$PYTHON313" -m venv .venv/bia-validator
fi
.venv/bia-validator/bin/python -m pip install --quiet bia-ro-crate-validator==0.3.1
export QT_QPA_PLATFORM=offscreen
.venv/bin/ruff check app tests tools benchmarks installers
.venv/bin/ruff format --check app tests tools benchmarks installers
.venv/bin/lint-imports
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
