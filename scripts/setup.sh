#!/usr/bin/env bash
# Create a virtual environment (if missing) and install petseg with its test tools into it.
#   PYTHON=python3.13 bash scripts/setup.sh       use that interpreter (it must be 3.11, 3.12 or 3.13)
#   VENV=.venv-py3.13 bash scripts/setup.sh       put the environment there instead of .venv
# Without PYTHON, the first supported one of python3.11, python3.12, python3.13, python3 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SUPPORTED="3.11 3.12 3.13"   # pyproject's requires-python: what the dependency set (TF 2.21 first) supports

# "3.12" for an interpreter, or nothing if it does not run.
version_of() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
is_supported() {
  [[ " $SUPPORTED " == *" $1 "* ]]
}

if [ -n "${PYTHON:-}" ]; then
  found=$(version_of "$PYTHON")
  is_supported "$found" || {
    echo "setup: PYTHON=$PYTHON is ${found:-not a runnable interpreter}; petseg needs Python ${SUPPORTED// /, }" >&2
    exit 1
  }
else
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null && is_supported "$(version_of "$candidate")"; then
      PYTHON=$candidate
      break
    fi
  done
  [ -n "${PYTHON:-}" ] || {
    echo "setup: no Python ${SUPPORTED// /, } found; install one, or set PYTHON=/path/to/python3.x" >&2
    exit 1
  }
fi

# pip, minus the noise of mirror folders this machine may not have; pip's exit status is kept.
pip_install() {
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ -x "$VENV/bin/python" ]; then
  existing=$(version_of "$VENV/bin/python")
  is_supported "$existing" || {
    echo "setup: $VENV has Python ${existing:-that does not run}; remove $VENV (rm -rf $VENV) and run setup again" >&2
    exit 1
  }
else
  echo "setup: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  pip_install --upgrade pip
fi
echo "setup: installing petseg and its dependencies into $VENV (first time: about 2 minutes)"
pip_install -e ".[test,deploy-check]" --config-settings editable_mode=strict || { echo "setup: pip could not install petseg; see its output above" >&2; exit 1; }
"$VENV/bin/python" -c "import petseg.components, petseg.pipeline, petseg.serving" \
  || { echo "setup: petseg did not install; see the pip output above" >&2; exit 1; }

# curl: tests/test_rest_png.py runs docs/rest.md's curl example against a local server (skipped without it).
if ! command -v curl >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing curl (apt-get) for the documented REST example's test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null; } \
      || echo "setup: apt-get could not install curl; tests/test_rest_png.py will skip its curl test" >&2
  else
    echo "setup: curl is not installed; install it to run docs/rest.md's curl example test (skipped until then)" >&2
  fi
fi

# checkov (the deployment files' security checks, tests/test_deploy_tools.py) pins many packages
# that clash with petseg's, so it gets a venv of its own: .venv-checkov (first time: about 1.5 minutes).
CHECKOV_REQUIREMENT="checkov>=3.3.30,<3.4"
if [ ! -x .venv-checkov/bin/python ]; then
  echo "setup: installing $CHECKOV_REQUIREMENT into .venv-checkov"
  "$PYTHON" -m venv .venv-checkov
fi
.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check "$CHECKOV_REQUIREMENT" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; } \
  || { echo "setup: pip could not install $CHECKOV_REQUIREMENT into .venv-checkov; see its output above" >&2; exit 1; }
