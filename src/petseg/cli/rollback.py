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
    p.add_argument(
        "--list",
        action="store_true",
        help="list the kept versions with their lineage and model card; change nothing",
    )
    _add_rollback_target(p)
    p.set_defaults(handler=_run_rollback)


def _run_rollback(args: argparse.Namespace, params: Params) -> None:
    from petseg.components.store.model_store import ModelStore
    from petseg.components.store.warmup import validate_served_copy

    if args.target == "kserve":
        return _run_kserve_rollback(args, params)
    store = ModelStore.from_params(params.push)
    if args.list:
        infos = store.list_versions()
        print(format_versions(infos, {info.version: model_card_file(info.path) for info in infos}))
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
        "kserve: undo the KServe InferenceService's newest rollout (pipeline.kserve.namespace, name "
        "push.model_name): Knative mode sends the traffic back to the previously rolled-out revision, "
        "Standard mode removes the canary",
    )


def _run_kserve_rollback(args: argparse.Namespace, params: Params) -> None:
    """`petseg rollback --target kserve`: undo the newest rollout in pipeline.kserve.mode (petseg.components.deploy)."""
    from petseg.components.deploy import custom_objects_api, rollback_traffic

    if args.to is not None or args.list:
        raise PetsegError(
            "--to and --list pick model versions in the store; with --target kserve, rollback "
            "moves traffic to the previously rolled-out revision (drop --to/--list)"
        )
    settings = params.pipeline.kserve
    result = rollback_traffic(custom_objects_api(), settings.namespace, params.push.model_name, settings.mode)
    print(
        f"rollback: InferenceService {result.namespace}/{result.name} sends all traffic to revision "
        f"{result.to_revision} (was {result.from_revision}); {result.how} until the next deploy"
    )


def model_card_file(version_dir: str) -> str | None:
    """The version's model card page (`<version>/model_card/model_card.html`), None when push wrote none."""
    from petseg.components.contracts.layout import MODEL_CARD_DIR, MODEL_CARD_HTML
    from petseg.components.store import storage

    path = storage.join(version_dir, MODEL_CARD_DIR, MODEL_CARD_HTML)
    return path if storage.isfile(path) else None


def format_versions(infos: list[VersionInfo], cards: dict[int, str | None] | None = None) -> str:
    """The table `petseg rollback --list` prints: `*` marks the served version, `prev` the one a plain
    `petseg rollback` serves (the version served before it, from the store's history); its model card last."""
    from petseg.components.contracts.lineage import VersionRecord

    cards = cards or {}
    header = (
        f"{'version':>7}  {'served':6}  {'pushed_at':25}  {'commit':10}  {'mean_iou':>8}  {'accuracy':>8}  "
        f"{'data':12}  card"
    )
    lines = [header]
    for info in infos:
        record = VersionRecord.from_json(info.lineage or {})
        lineage = record.lineage
        commit = (lineage.git_commit or "-")[:8] + ("+" if lineage.git_dirty else "")
        data = (lineage.data_manifest_sha256 or "-")[:12]
        lines.append(
            f"{info.version:>7}  {_mark(info):6}  {record.pushed_at or '-':25}  "
            f"{commit:10}  {_fmt(record.metrics.get('mean_iou')):>8}  {_fmt(record.metrics.get('pixel_accuracy')):>8}  "
            f"{data:12}  {cards.get(info.version) or '-'}"
        )
    return "\n".join(lines)


def _mark(info: VersionInfo) -> str:
    return "*" if info.served else "prev" if info.rollback_target else ""


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"
