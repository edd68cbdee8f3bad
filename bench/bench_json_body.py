"""Memory and time to read one large REST body: json_body (numpy) against orjson to lists, in the same run.

Writes a row-JSON batch of random uint8 images of about --mib MiB
({"instances": [...]}, as TF Serving clients send it) to a temporary file,
then, each in a fresh Python process (so that VmHWM is that reader's own
peak), reads it and turns it into the uint8 array the model is given:

- orjson: orjson.loads, then np.array(...).astype(uint8), what serving/rest.py did before;
- json_body: json_body.parse_document, then .astype(uint8), what it does now.

It prints, for each, the seconds and the peak RSS above the process's RSS
with the body read (VmHWM - VmRSS before parsing), then json_body's ratios
against orjson (goal: memory ratio < 0.5).

    python bench/bench_json_body.py [--mib 60] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

MIB = 2**20
READER = r"""
import json, sys, time
import numpy as np
def status():
    fields = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields
mode, path = sys.argv[1], sys.argv[2]
import orjson
from petseg.serving import json_body
body = open(path, "rb").read()
before = status()["VmRSS"]
started = time.perf_counter()
if mode == "orjson":
    array = np.array(orjson.loads(body)["instances"]).astype(np.uint8)
else:
    array = json_body.parse_document(body, 256)["instances"].values.astype(np.uint8)
seconds = time.perf_counter() - started
peak = status()["VmHWM"] - before
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "shape": list(array.shape), "sum": int(array.sum())}))
"""


def measure(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", READER, mode, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=float, default=60.0)
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds; the best of each is kept")
    args = p.parse_args(argv)
    side = max(16, int((args.mib * MIB / 4 / 12.6) ** 0.5))
    pixels = np.random.default_rng(0).integers(0, 256, (4, side, side, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "body.json"
        path.write_bytes(orjson.dumps({"instances": pixels}, option=orjson.OPT_SERIALIZE_NUMPY))
        size = path.stat().st_size
        print(f"# body {size / MIB:.1f} MiB: 4 x {side} x {side} x 3 uint8 as row JSON")
        results: dict[str, list[dict]] = {"orjson": [], "json_body": []}
        for _ in range(args.rounds):
            for mode in results:
                results[mode].append(measure(path, mode))
    best = {mode: min(runs, key=lambda r: r["peak_bytes"]) for mode, runs in results.items()}
    assert best["orjson"]["sum"] == best["json_body"]["sum"] == int(pixels.sum(dtype=np.int64)), "readers disagree"
    for mode, r in best.items():
        print(
            f"{mode:10s} {min(x['seconds'] for x in results[mode]):6.2f} s   peak +{r['peak_bytes'] / MIB:7.0f} MiB "
            f"({r['peak_bytes'] / size:4.1f} x the body)"
        )
    memory = best["json_body"]["peak_bytes"] / best["orjson"]["peak_bytes"]
    seconds = min(x["seconds"] for x in results["json_body"]) / min(x["seconds"] for x in results["orjson"])
    verdict = "met" if memory < 0.5 else "NOT met"
    print(f"json_body / orjson: memory {memory:.2f} (goal < 0.5: {verdict}), time {seconds:.2f}")


if __name__ == "__main__":
    main()
