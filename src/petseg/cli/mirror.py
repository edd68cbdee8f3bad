"""`petseg mirror`: keep a local copy of an object-store model store for a TF Serving that cannot read it."""

from __future__ import annotations

import argparse
from pathlib import Path

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import Params


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mirror",
        help="copy the model store's versions and models.config to a local folder, and keep them in step",
        description="TF Serving 2.7+ cannot read s3://: this fills the folder it serves (a sidecar, "
        "serving/deploy/components/s3-models). Credentials: the usual S3 variables.",
    )
    p.add_argument("--from", dest="source", default=None, help="store URI (default: push.model_base_path)")
    p.add_argument("--to", dest="target", type=Path, required=True, help="local folder TF Serving reads")
    p.add_argument("--every", type=float, default=5.0, help="seconds between passes (default: 5)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.set_defaults(handler=_run_mirror)


def _run_mirror(args: argparse.Namespace, params: Params) -> None:
    import os

    from petseg.components.contracts.object_store import store_env
    from petseg.components.store.mirror import mirror

    if not args.every > 0:
        raise PetsegError(f"--every must be a positive number of seconds, got {args.every}")
    # The endpoint and region from pipeline.object_store, as the pipeline's store steps get them; the keys
    # come from the pod's Secret (secretKeyRef) or the environment. A variable already set wins.
    for name, value in store_env(params.pipeline.object_store).values.items():
        os.environ.setdefault(name, value)
    source = args.source or params.push.model_base_path
    mirror(source, args.target, params.push.model_name, args.every, passes=1 if args.once else None)
