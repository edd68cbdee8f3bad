"""One racer of tests/test_store_race.py: a separate process, as a second machine would be.

usage: python store_race_worker.py MODE BASE_PATH BARRIER_DIR RACERS LOCK_TIMEOUT KEEP

It shares nothing local with the other racers (the test gives each its own
HOME and TMPDIR, so no flock or temporary file is common). It waits at a file
barrier until all RACERS processes are ready, then:

- claim: claims a version number (ModelStore.claim_version) without the lock;
- publish: does what push does to the store, under the store's lock: claims a
  number, stages a version locally (saved_model.pb, variables, lineage.json
  naming this process), publishes it, serves it and applies retention.

Prints one JSON line: {"version": N} or {"error": "<the one line>"}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from petseg.components.core.errors import PetsegError
from petseg.components.store.model_store import ModelStore


def wait_at_barrier(folder: Path, racers: int) -> None:
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(folder.glob("ready-*"))) < racers:
        if time.monotonic() > deadline:
            raise SystemExit("barrier: the other racers never came")
        time.sleep(0.005)


def publish(store: ModelStore) -> int:
    with store.lock():
        store.remove_leftovers()
        version = store.claim_version()
        with tempfile.TemporaryDirectory() as tmp:
            staging = Path(tmp) / "staging"
            (staging / "variables").mkdir(parents=True)
            (staging / "variables" / "variables.index").write_bytes(os.urandom(64))
            (staging / "lineage.json").write_text(json.dumps({"version": version, "pid": os.getpid()}))
            (staging / "saved_model.pb").write_bytes(f"pid {os.getpid()} version {version}".encode())
            store.publish(str(staging), version, {"pid": os.getpid()})
        store.serve_version(version, log=lambda _: None)
        store.apply_retention()
    return version


def main() -> None:
    mode, base, barrier, racers, lock_timeout, keep = sys.argv[1:7]
    store = ModelStore(base, keep_versions=int(keep), lock_timeout_seconds=float(lock_timeout))
    store.next_version()  # connect and probe the bucket before the barrier, so the race is the writes
    wait_at_barrier(Path(barrier), int(racers))
    try:
        version = store.claim_version() if mode == "claim" else publish(store)
    except PetsegError as exc:
        print(json.dumps({"error": str(exc)}))
        return
    print(json.dumps({"version": version}))


if __name__ == "__main__":
    main()
