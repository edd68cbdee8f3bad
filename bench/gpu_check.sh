#!/usr/bin/env bash
# The first run on a GPU machine: install petseg with TensorFlow's CUDA wheels, then measure
# (bench/gpu_check.py) and write bench/RESULTS-gpu.md, in about 8 minutes. See docs/gpu-check.md.
#
#   bash bench/gpu_check.sh                      install into .venv-gpu from the package registry, then measure
#   bash bench/gpu_check.sh --wheelhouse DIR     install with no network, from wheels in DIR (see --download)
#   bash bench/gpu_check.sh --download DIR       only fill DIR with every wheel the install needs, for Linux
#                                                x86-64 and this Python (run where the registry is reachable)
#   bash bench/gpu_check.sh --smoke              CPU smoke mode (CI, tests/test_gpu_check.py): this environment's
#                                                python, tiny sizes, GPU rows skipped with a line saying so
#   ... [--out FILE]                             write FILE instead of bench/RESULTS-gpu.md
#
# PYTHON (default python3) makes the venv; VENV (default .venv-gpu) is where it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}
BUDGET_SECONDS=${BUDGET_SECONDS:-480}
mode=gpu
wheelhouse=""
out=bench/RESULTS-gpu.md
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode=smoke ;;
    --wheelhouse) wheelhouse=${2:?--wheelhouse needs a folder}; shift ;;
    --download) mode=download; wheelhouse=${2:?--download needs a folder}; shift ;;
    --out) out=${2:?--out needs a file}; shift ;;
    *) echo "gpu_check: unknown argument $1; see the top of bench/gpu_check.sh" >&2; exit 2 ;;
  esac
  shift
done

pip_quiet() {
  "$@" --quiet --disable-pip-version-check 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ "$mode" = download ]; then
  mkdir -p "$wheelhouse"
  echo "gpu_check: downloading petseg[gpu] and its dependencies into $wheelhouse (several GB: CUDA and cuDNN wheels)"
  pip_quiet "$PYTHON" -m pip download --dest "$wheelhouse" ".[gpu]" setuptools wheel
  echo "gpu_check: $(find "$wheelhouse" -name '*.whl' | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1); copy it with the repository"
  exit 0
fi

if [ "$mode" = smoke ]; then
  # CI: the environment that runs the tests (scripts/setup.sh's .venv), nothing installed.
  exec "${SMOKE_PYTHON:-python}" bench/gpu_check.py --smoke --out "$out"
fi

started=$(date +%s)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  || echo "gpu_check: nvidia-smi not found; TensorFlow will say whether it sees a GPU"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
if [ -n "$wheelhouse" ]; then
  [ -d "$wheelhouse" ] || { echo "gpu_check: --wheelhouse $wheelhouse is not a folder; make it with --download" >&2; exit 1; }
  note="offline, from the wheelhouse $wheelhouse"
  pip_quiet "$VENV/bin/python" -m pip install --no-index --find-links "$wheelhouse" setuptools wheel
  pip_quiet "$VENV/bin/python" -m pip install --no-index --find-links "$wheelhouse" --no-build-isolation \
    -e ".[gpu]" --config-settings editable_mode=strict \
    || { echo "gpu_check: the offline install failed; rebuild the wheelhouse with --download on this Python" >&2; exit 1; }
else
  note="from the package registry"
  pip_quiet "$VENV/bin/python" -m pip install -e ".[gpu]" --config-settings editable_mode=strict \
    || { echo "gpu_check: pip could not install petseg[gpu]; no registry here? use --wheelhouse" >&2; exit 1; }
fi
installed=$(( $(date +%s) - started ))
echo "gpu_check: installed in ${installed}s ($note); measuring"
# What is left of the budget, at least 5 minutes: a slow install does not cut the measuring short.
left=$(( BUDGET_SECONDS - installed ))
[ "$left" -ge 300 ] || left=300
exec timeout "$left" "$VENV/bin/python" bench/gpu_check.py --out "$out" \
  --install-note "$note in ${installed}s (Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())'))"
