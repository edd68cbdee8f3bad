#!/usr/bin/env bash
# The main job, offline: install, then run the whole DVC pipeline on the synthetic dataset
# (download → validate → preprocess → train → evaluate → push) as a DVC experiment, serve the
# pushed model with the local TF-Serving-compatible gRPC server, and query it with the client.
#
# The demo's settings are applied with `dvc exp run -S`, which writes them into params.yaml
# (that is how DVC experiments work); `git checkout params.yaml` returns to the real-data
# defaults. PETSEG_DEMO_EXTRA adds more `-S key=value` overrides (the tests use it to shrink
# the run); PETSEG_NO_SETUP=1 uses the current environment instead of installing into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${PETSEG_NO_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
  source .venv/bin/activate
fi
git rev-parse --verify -q HEAD >/dev/null \
  || { echo "demo: run this in a git clone of petseg with at least one commit (DVC experiments need one)" >&2; exit 1; }

DEMO_PARAMS=(
  -S data.source=synthetic
  -S model.encoder_weights=none
  -S train.loss=sparse_ce_dice
  -S train.epochs=18
  -S train.batch_size=16
  -S train.learning_rate=0.002
  -S evaluate.min_mean_iou=0.5
  -S evaluate.min_accuracy=0.85
)
read -r -a EXTRA <<< "${PETSEG_DEMO_EXTRA:-}"

echo "demo: running the pipeline on the synthetic dataset (about 5 minutes on 2 CPU cores)"
dvc exp run "${DEMO_PARAMS[@]}" "${EXTRA[@]}"

echo
echo "demo: metrics"
dvc metrics show
echo
echo "demo: blessing"
python -c 'import json; b = json.load(open("reports/evaluate/blessing.json")); print(("BLESSED: " if b["blessed"] else "NOT BLESSED: ") + b["reason"])'
echo
echo "demo: pushed versions (the last column is each version's model card)"
petseg rollback --list
card=$(python -c 'import json; print(json.load(open("reports/push.json")).get("card") or "")')
echo
echo "demo: model card: ${card:+$card/model_card.html (a copy: }reports/model_card/model_card.html${card:+)}"

mkdir -p reports/demo
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo
echo "demo: starting the local gRPC server on 127.0.0.1:$port (log: reports/demo/server.log)"
petseg serve --host 127.0.0.1 --port "$port" > reports/demo/server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

mapfile -t images < <(ls data/raw/images/synthetic_test_*.jpg | head -n 4)
petseg predict --target "127.0.0.1:$port" --out reports/demo/predictions --sheet reports/demo/prediction_sheet.png \
  "${images[@]}"

cat <<TXT

demo: done. Where everything is:
  data/raw/                         raw dataset (images, trimaps, examples.csv, download.json)
  reports/validation/               Great Expectations table, result JSON, Data Docs (data_docs/validations/.../*.html)
  data/records/                     TFRecord shards + manifest.json
  models/savedmodel/                trained SavedModel (serving signatures); models/checkpoints/ for resume
  dvclive/                          training curves (dvc plots show)
  reports/evaluate/                 metrics.json, blessing.json, confusion_matrix.png, sample_predictions.png
  serving/models/petseg/<version>/  the pushed model, TF Serving layout (+ models.config beside it)
  serving/models/petseg/<version>/model_card/  its model card: model_card.html (open it in a browser), .md, .json
  reports/model_card/               the same card, push's DVC output (docs/model-card.md)
  reports/demo/predictions/         masks and overlays answered over gRPC
  reports/demo/prediction_sheet.png the same, on one sheet
TXT
