#!/usr/bin/env bash
# Create .venv (if missing) and install petseg with its test tools into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# pip, minus the noise of mirror folders this machine may not have; pip's exit status is kept.
pip_install() {
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  pip_install --upgrade pip
fi
echo "setup: installing petseg and its dependencies into .venv (first time: about 2 minutes)"
pip_install -e ".[test,deploy-check]" || { echo "setup: pip could not install petseg; see its output above" >&2; exit 1; }
.venv/bin/python -c "import petseg.components, petseg.pipeline, petseg.serving" \
  || { echo "setup: petseg did not install; see the pip output above" >&2; exit 1; }

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
bash scripts/setup-kserve-check.sh
