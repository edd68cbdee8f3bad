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
pip_install -e ".[test]" || { echo "setup: pip could not install petseg; see its output above" >&2; exit 1; }
.venv/bin/python -c "import petseg.components, petseg.pipeline, petseg.serving" \
  || { echo "setup: petseg did not install; see the pip output above" >&2; exit 1; }
bash scripts/setup-kserve-check.sh
