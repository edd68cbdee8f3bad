"""What the Kubeflow components need around a step call: typed params in, KFP artifacts out.

The component functions in `petseg.pipeline.components` run inside the project's
image (or, locally, in this environment) and import this module there. It holds
no step logic, only translation between KFP's world and the step functions':

- a pipeline parameter holding one params.yaml section arrives as a JSON object
  (a protobuf Struct on the cluster, where every number is a float), so the
  section is rebuilt here with its integers restored and validated by the same
  code that validates params.yaml;
- the steps' reports (JSON numbers, Data Docs, PNG plots) are turned into what the
  KFP UI renders: Metrics scalars and self-contained HTML pages.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import shutil
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.params import Params, params_from_dict

# push.model_base_path schemes that outlive a pod (TF Serving reads both itself).
DURABLE_SCHEMES = frozenset({"s3", "gs"})


def push_target_settings(params: Params, *, on_cluster: bool) -> dict[str, Any]:
    """What check_push_target needs besides push.model_base_path, as a constant component input.

    The `pipeline` section shapes the compiled pipeline and is no run parameter,
    so the push and drift_reference components get these compile-time settings
    as a constant, and check the run's own push.model_base_path against them.
    """
    settings = params.pipeline
    return {
        "serving_pvc": settings.serving_pvc,
        "serving_mount_path": settings.serving_mount_path,
        "on_cluster": on_cluster,
    }


def check_push_target(
    model_base_path: str, serving_pvc: str, serving_mount_path: str, *, on_cluster: bool, where: str = ""
) -> None:
    """ParamsError (one line, prefixed by `where`) for a push target the pipeline's model server cannot read.

    The rule: with `pipeline.serving_pvc`, push.model_base_path must lie under
    pipeline.serving_mount_path (where that PVC is mounted); without it, on a
    cluster, push.model_base_path must be an object store (s3://, gs://): a local
    path is the pod's own disk, gone when the pod ends. Checked when the pipeline
    is compiled or submitted (params.yaml) and again inside the push and
    drift_reference components (the run's parameters, which the KFP UI lets a
    user change), by this one function.
    """
    from petseg.components.store.storage import scheme

    if serving_pvc:
        mount = serving_mount_path.rstrip("/")
        base = model_base_path
        if not mount.startswith("/") or not (base == mount or base.startswith(mount + "/")):
            raise ParamsError(
                f"{where}with pipeline.serving_pvc set, push.model_base_path ({base}) must lie under "
                f"pipeline.serving_mount_path ({serving_mount_path}, an absolute path)"
            )
        return
    if on_cluster and scheme(model_base_path) not in DURABLE_SCHEMES:
        raise ParamsError(
            f"{where}push.model_base_path '{model_base_path}' is inside the push pod and lost when it ends; set it to "
            "an object store (s3://bucket/models, gs://bucket/models) or set pipeline.serving_pvc "
            "with push.model_base_path under pipeline.serving_mount_path"
        )


def section_params(section: str, value: Mapping[str, Any]) -> Any:
    """The typed params section `section` (e.g. "train") from a pipeline parameter, validated."""
    cls = typing.get_type_hints(Params).get(section)
    if cls is None:
        raise PetsegError(f"unknown params section '{section}'")
    raw = restore_integers(cls, dict(value))
    return getattr(params_from_dict({section: raw}, source=f"pipeline parameter '{section}'"), section)


def restore_integers(cls: type, raw: Any) -> Any:
    """`raw` with whole floats turned back into ints where dataclass `cls` declares an int.

    A protobuf Struct (how KFP passes a dict parameter) stores every number as a
    double, so `epochs: 20` arrives as 20.0; params validation rightly rejects a
    float for an int field, so the declared type is restored first. Non-whole
    floats are left alone for validation to reject with the key's name.
    """
    if not isinstance(raw, dict) or not dataclasses.is_dataclass(cls):
        return raw
    hints = typing.get_type_hints(cls)
    out = dict(raw)
    for name, value in raw.items():
        tp = hints.get(name)
        if tp is None:
            continue  # unknown key: validation names it
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out[name] = restore_integers(tp, value)
        elif tp is int and isinstance(value, float) and value.is_integer():
            out[name] = int(value)
    return out


def scalar_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a (nested) mapping, flattened to `a_b` names, as KFP Metrics want them."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalar_metrics(value, prefix=f"{name}_"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def log_metrics(artifact: Any, values: Mapping[str, Any]) -> None:
    """Log every number in `values` on a KFP Metrics artifact (shown in the run's metrics tab).

    The numbers are also written as JSON at the artifact's path: KFP keeps Metrics
    in metadata only, and its local runner's cache treats an artifact without a
    file as missing, which would re-run the step every time.
    """
    for name, value in scalar_metrics(values).items():
        artifact.log_metric(name, value)
    write_metadata_file(artifact)


def write_metadata_file(artifact: Any) -> None:
    """Write a metadata-only artifact's (Metrics, ClassificationMetrics) metadata as JSON at its path."""
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(artifact.metadata, indent=2, sort_keys=True) + "\n")


def copy_validation_report(validation_dir: str | Path, html_path: str | Path) -> None:
    """Copy the validation run's Data Docs page to a KFP HTML artifact (one self-contained page)."""
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    from petseg.components.validate import data_docs_page

    shutil.copyfile(data_docs_page(validation_dir), html_path)


def keep_validation_report(validation_dir: str | Path, html_path: str | Path, html_uri: str, *, failed: bool) -> bool:
    """Write the Data Docs page to the HTML artifact; after a failure also upload it to `html_uri` if a store.

    Kubeflow uploads a step's outputs only when it succeeds, so a failed
    validation would lose the page that says why. When the artifact URI is an
    object store this process can reach (s3://, gs://), the page is uploaded
    there directly; the log names where it is (KFP's default minio:// store is
    not reached from here: there the page stays in the pod, see docs/kubeflow.md). Returns whether a page was written.
    Errors while keeping the evidence are reported, never raised over the validation's own error.
    """
    from petseg.components.store import storage
    from petseg.components.validate import data_docs_page

    if not data_docs_page(validation_dir).is_file():
        return False  # the validation stopped before GX ran (e.g. no index): nothing to keep
    try:
        copy_validation_report(validation_dir, html_path)
    except OSError as exc:
        if not failed:
            raise
        print(f"validate: could not keep the report at {html_path} ({exc})", flush=True)
        return False
    if failed:
        print(f"validate: the report is at {html_path}", flush=True)
        if storage.scheme(html_uri) in ("s3", "gs"):
            try:
                storage.copy_file(str(html_path), html_uri)
                print(f"validate: the report was uploaded to {html_uri}", flush=True)
            except Exception as exc:
                print(f"validate: could not upload the report to {html_uri} ({exc})", flush=True)
    return True


def split_savedmodel(train_dir: str | Path, model_path: str | Path) -> Path:
    """Move the SavedModel out of train's output folder into the Model artifact's path (it alone).

    train writes `<train_dir>/savedmodel/` next to its checkpoints; the Model
    artifact that evaluate and push download must be the SavedModel only.
    """
    from petseg.components.contracts.layout import savedmodel_dir

    source, target = savedmodel_dir(train_dir), Path(model_path)
    if not (source / "saved_model.pb").is_file():
        raise PetsegError(f"{source}: train wrote no SavedModel")
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))
    return target


def run_params(sections: Mapping[str, Mapping[str, Any]]) -> Params:
    """A whole Params from the run's section parameters (each validated as section_params does).

    Sections that are not run parameters (serve, pipeline) keep their defaults.
    """
    raw = {name: restore_integers(typing.get_type_hints(Params)[name], dict(value)) for name, value in sections.items()}
    return params_from_dict(raw, source="pipeline parameters")


def write_image_sheet(title: str, images: Iterable[str | Path], html_path: str | Path) -> int:
    """Write one HTML page embedding `images` (PNG files) inline, for KFP's HTML viewer; the count shown."""
    figures = []
    for path in images:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = html.escape(Path(path).stem.replace("_", " "))
        figures.append(
            f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    body = "\n".join(figures) or "<p>No images were written.</p>"
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif}img{max-width:100%}figure{margin:1em 0}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    html_path = Path(html_path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page)
    return len(figures)
