#!/usr/bin/env bash
# Create .venv-kserve: the kserve SDK, used only by tests/kserve_schema.py to check the InferenceService
# manifests against KServe's own models. It is a venv of its own because every kserve release pins
# pandas<3, and the project runs on pandas 3. Called by scripts/setup.sh; about 3 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
KSERVE_SPEC="kserve>=0.21,<0.22"

if [ ! -x .venv-kserve/bin/python ]; then
  echo "setup: creating .venv-kserve (the kserve SDK, for the manifest schema tests)"
  "$PYTHON" -m venv .venv-kserve
fi
.venv-kserve/bin/python -m pip install --quiet --disable-pip-version-check "$KSERVE_SPEC" "kubernetes>=37,<38" "pyyaml>=6,<7" 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
.venv-kserve/bin/python -c "import kserve.models" \
  || { echo "setup: the kserve SDK did not install into .venv-kserve; see the pip output above" >&2; exit 1; }
