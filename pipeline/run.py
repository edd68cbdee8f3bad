"""Compile, submit and run the Kubeflow pipeline: what `petseg pipeline ...` calls.

- `submit` sends the compiled pipeline to a Kubeflow Pipelines API through
  `kfp.Client`, with a bearer token from the environment, and returns the run's URL.
- `run_local` runs the same pipeline on this machine with KFP's local
  SubprocessRunner (every component in a subprocess of the current Python, which
  has petseg installed) and reports where each artifact landed.
- `parse_overrides` turns `--param key=value` options into params overrides.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from petseg.components.core.errors import ParamsError, PetsegError, first_line
from petseg.components.core.params import Params, with_overrides

TOKEN_ENV = "KF_PIPELINES_TOKEN"
CONNECT_TIMEOUT_S = 5.0
HEALTHZ_PATH = "/apis/v2beta1/healthz"
# run-local runs on the synthetic set unless told otherwise (a --param wins).
LOCAL_DEFAULTS = {"data.source": "synthetic"}


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`["train.epochs=2", "data.source=synthetic"]` as {dotted key: YAML-typed value}."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--param {pair!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=2")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise ParamsError(f"--param {pair!r}: the value is not valid YAML") from None
    return overrides


def apply_overrides(params: Params, pairs: Iterable[str], defaults: dict[str, Any] | None = None) -> Params:
    """`params` with `defaults` then the `--param` pairs applied, validated again."""
    overrides = {**(defaults or {}), **parse_overrides(pairs)}
    return with_overrides(params, overrides) if overrides else params


# ------------------------------------------------------------------------- submit
@dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    url: str
    experiment: str


def submit(
    params: Params,
    host: str,
    *,
    namespace: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    token: str | None = None,
) -> SubmittedRun:
    """Compile the pipeline for `params` and start a run of it on the KFP API at `host`."""
    from petseg.pipeline.pipeline import check_settings

    host = normalise_host(host)
    check_settings(params)  # a pipeline that cannot work is refused before the cluster is contacted
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    check_api_reachable(host, token)

    import kfp
    import kfp_server_api
    import urllib3

    from petseg.pipeline.pipeline import compile_pipeline, pipeline_arguments

    experiment = experiment or "petseg"
    with tempfile.TemporaryDirectory(prefix="petseg-pipeline-") as tmp:
        package = compile_pipeline(params, Path(tmp) / "petseg-pipeline.yaml")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # kfp.Client's note about KFP server versions
                client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token)
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=pipeline_arguments(params),
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
            )
        except kfp_server_api.ApiException as exc:
            raise PetsegError(
                f"Kubeflow Pipelines at {host} refused the run: HTTP {exc.status} {exc.reason}{_auth_hint(exc.status)}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PetsegError(f"lost the connection to Kubeflow Pipelines at {host}: {first_line(exc)}") from None
    return SubmittedRun(run_id=result.run_id, url=f"{host}/#/runs/details/{result.run_id}", experiment=experiment)


def normalise_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise PetsegError(f"--host {host!r}: give the API's URL with its scheme, e.g. http://localhost:8080")
    return host


def check_api_reachable(host: str, token: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise PetsegError (one line, within `timeout` seconds) unless `host` answers KFP's healthz."""
    request = urllib.request.Request(host + HEALTHZ_PATH)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # No proxy from the environment: kfp.Client, which makes the real calls, does not use one either.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise PetsegError(
            f"{host} is not a Kubeflow Pipelines API: HTTP {exc.code} on {HEALTHZ_PATH}{_auth_hint(exc.code)}"
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PetsegError(
            f"cannot reach Kubeflow Pipelines at {host} ({first_line(reason)}); check --host, "
            "or forward the API, e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`"
        ) from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise PetsegError(
            f"{host} is not a Kubeflow Pipelines API ({HEALTHZ_PATH} did not answer JSON; "
            f"a login page? set {TOKEN_ENV})"
        ) from None


def _auth_hint(status: int | None) -> str:
    return f" (set {TOKEN_ENV} to a valid bearer token)" if status in (401, 403) else ""


# ---------------------------------------------------------------------- run-local


@dataclass(frozen=True)
class LocalRun:
    """Where a local run's outputs landed."""

    run_dir: Path
    artifacts: list[tuple[str, str, Path]] = field(default_factory=list)  # (step, output, path)
    blessed: bool = False
    reason: str = ""  # evaluate's blessing decision, in words
    pushed: dict | None = None  # push's outcome (status, version, path) when it ran


def run_local(params: Params, workdir: str | Path, *, cache: bool = False) -> LocalRun:
    """Run the whole pipeline here with KFP's SubprocessRunner; outputs under `workdir`.

    With `cache`, tasks whose component and inputs are unchanged reuse their
    earlier outputs (KFP local caching; the data steps and train cache, evaluate
    and push never do). The cache cannot see edits to the step code itself.
    """
    from kfp import local

    from petseg.pipeline.pipeline import build_pipeline, pipeline_arguments

    workdir = Path(workdir).resolve()
    pipeline = build_pipeline(params, for_cluster=False)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(workdir / "runs"),
        workspace_root=str(_ensure_dir(workdir / "workspace")),
        raise_on_error=True,
        enable_caching=cache,
        cache_root=str(workdir / "cache"),
    )
    with warnings.catch_warnings():
        # Local runs ignore images and Kubernetes settings; KFP warns about each, every task.
        warnings.filterwarnings("ignore", message=".*(custom or non-Python base image|have no effect).*")
        try:
            task = pipeline(**pipeline_arguments(params))
        except RuntimeError as exc:
            raise PetsegError(
                f"local pipeline run failed: {failed_step(exc)} (its log is above; "
                f"outputs so far under {workdir / 'runs'})"
            ) from None
    return local_run_result(task.outputs)


def failed_step(exc: BaseException) -> str:
    """Which step failed, from the local runner's error (which is coloured for a terminal)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc))
    match = re.search(r"[Ii]nner task failed: '([^']+)'", text)
    return f"step {match.group(1)} failed" if match else text


def local_run_result(outputs: dict[str, Any]) -> LocalRun:
    """Collect artifact paths, the blessing and push's version folder from a finished local run."""
    from petseg.components.contracts.blessing import read_blessing
    from petseg.pipeline.pipeline import PipelineOutputs

    # Every pipeline output but the blessing is a file artifact; the runner writes each one in
    # the folder of the task that made it, so the step is that folder's name.
    paths = [(name, Path(outputs[name].path)) for name in PipelineOutputs._fields if name != "blessed"]
    artifacts = [(path.parent.name, name, path) for name, path in paths]
    # evaluate never caches, so its outputs always sit in this run's own folder.
    run_dir = Path(outputs["evaluation"].path).parents[1]
    push_output = run_dir / "push" / "executor_output.json"
    pushed = None
    if push_output.is_file():
        pushed = json.loads(json.loads(push_output.read_text())["parameterValues"]["Output"])
    blessing = read_blessing(outputs["evaluation"].path)
    return LocalRun(
        run_dir=run_dir, artifacts=artifacts, blessed=bool(outputs["blessed"]), reason=blessing.reason, pushed=pushed
    )


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
