"""`petseg rollback`: serve an earlier version again (the model store), or move KServe traffic back."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from petseg.components.core.errors import PetsegError
from petseg.components.core.params import Params

if TYPE_CHECKING:
    from petseg.components.store.model_store import VersionInfo


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollback",
        help="serve an earlier pushed version again after infra-validating it (models.config), or --list them",
    )
    p.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="version to serve (default: the version served before the current one, from the store's history)",
    )
    p.add_argument("--list", action="store_true", help="list the kept versions with their lineage; change nothing")
    _add_rollback_target(p)
    p.set_defaults(handler=_run_rollback)


def _run_rollback(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.store.model_store import ModelStore
    from petseg.components.store.warmup import validate_served_copy

    if args.target == "kserve":
        return _run_kserve_rollback(args, params)
    store = ModelStore.from_params(params.push)
    if args.list:
        print(format_versions(store.list_versions()))
        return
    result = store.rollback(args.to, infra_check=validate_served_copy)
    print(
        f"rollback: {params.push.model_name} now serves version {result.served} (was {result.previous}); "
        f"{result.config_file} updated"
    )


def _add_rollback_target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=("store", "kserve"),
        default="store",
        help="store: serve an earlier version by models.config (TF Serving, petseg serve; default); "
        "kserve: send the KServe InferenceService's traffic back to its previously rolled-out "
        "revision (pipeline.kserve.namespace, name push.model_name)",
    )


def _run_kserve_rollback(args: argparse.Namespace, params: Params) -> None:
    """`petseg rollback --target kserve`: canaryTrafficPercent 0 on the InferenceService (petseg.components.deploy)."""
    from petseg.components.deploy import custom_objects_api, rollback_traffic

    if args.to is not None or args.list:
        raise PetsegError(
            "--to and --list pick model versions in the store; with --target kserve, rollback "
            "moves traffic to the previously rolled-out revision (drop --to/--list)"
        )
    result = rollback_traffic(custom_objects_api(), params.pipeline.kserve.namespace, params.push.model_name)
    print(
        f"rollback: InferenceService {result.namespace}/{result.name} sends all traffic to revision "
        f"{result.to_revision} (was {result.from_revision}); canaryTrafficPercent is 0 until the next deploy"
    )


def format_versions(infos: list[VersionInfo]) -> str:
    """The table `petseg rollback --list` prints: `*` marks the served version, `prev` the one a plain
    `petseg rollback` serves (the version served before it, from the store's history)."""
    header = f"{'version':>7}  {'served':6}  {'pushed_at':25}  {'commit':10}  {'mean_iou':>8}  {'accuracy':>8}  data"
    lines = [header]
    for info in infos:
        lin = info.lineage or {}
        metrics = lin.get("metrics") or {}
        commit = (lin.get("git_commit") or "-")[:8] + ("+" if lin.get("git_dirty") else "")
        data = (lin.get("data_manifest_sha256") or "-")[:12]
        lines.append(
            f"{info.version:>7}  {_mark(info):6}  {lin.get('pushed_at', '-'):25}  "
            f"{commit:10}  {_fmt(metrics.get('mean_iou')):>8}  {_fmt(metrics.get('pixel_accuracy')):>8}  {data}"
        )
    return "\n".join(lines)


def _mark(info: VersionInfo) -> str:
    return "*" if info.served else "prev" if info.rollback_target else ""


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
