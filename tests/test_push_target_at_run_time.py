"""The push-target rule holds at run time: a push.model_base_path changed in the KFP UI is checked again.

Compile checks params.yaml's push target (test_pipeline.py); a run's `push` parameter can be
edited in the KFP UI after that, so the push and drift_reference components check the value
they are given against the compile-time settings the pipeline hands them as a constant.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kfp.dsl import HTML, Artifact, Model

from petseg.components.core.errors import ParamsError
from petseg.components.core.params import load_params, params_to_dict, with_overrides
from petseg.pipeline import components
from petseg.pipeline.component_io import check_push_target, push_target_settings
from petseg.pipeline.pipeline import compile_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER = with_overrides(
    load_params(REPO_ROOT / "params.yaml"),
    {"push.model_base_path": "s3://petseg-models/serving", "push.server_model_base_path": ""},
)
ON_CLUSTER = push_target_settings(CLUSTER, on_cluster=True)
WITH_PVC = push_target_settings(
    with_overrides(CLUSTER, {"pipeline.serving_pvc": "models", "push.model_base_path": "/serving/models/prod"}),
    on_cluster=True,
)


def _push_section(model_base_path: str) -> dict:
    return dict(params_to_dict(CLUSTER.push), model_base_path=model_base_path)


def _run_sections(model_base_path: str) -> dict:
    sections = {name: params_to_dict(getattr(CLUSTER, name)) for name in ("data", "validate", "preprocess")}
    sections |= {name: params_to_dict(getattr(CLUSTER, name)) for name in ("model", "train", "evaluate")}
    return sections | {"push": _push_section(model_base_path), "card": params_to_dict(CLUSTER.card)}


def _artifacts(tmp_path: Path) -> dict:
    """Input artifacts whose folders exist and are empty: the check must fail before any is read."""
    out = {}
    for name, cls in (
        ("trained_model", Model),
        ("evaluation", Artifact),
        ("validation", Artifact),
        ("training_metrics", Artifact),
        ("training_log", Artifact),
        ("model_card", HTML),
    ):
        folder = tmp_path / name
        folder.mkdir()
        out[name] = cls(name=name, uri=str(folder))
    return out


@pytest.mark.parametrize("base", ["serving/models", "/abs/models", "memory://models"])
def test_push_component_refuses_a_pod_local_override_in_one_line(tmp_path, base):
    with pytest.raises(ParamsError) as err:
        components.push(
            **_artifacts(tmp_path),
            **_run_sections(base),
            push_target=ON_CLUSTER,
            code={},
            serving_release="2.21.0",
            run_name="r",
            run_id="1",
        )
    text = str(err.value)
    assert text.startswith(f"this run's push parameter: push.model_base_path '{base}' is inside the push pod")
    assert "\n" not in text
    assert [p.name for p in (tmp_path / "trained_model").iterdir()] == []  # nothing read or written


def test_drift_reference_component_refuses_a_pod_local_override():
    validate = params_to_dict(CLUSTER.validate)
    with pytest.raises(ParamsError, match=r"^this run's push parameter: push\.model_base_path 'serving/models' is"):
        components.drift_reference(validate=validate, push=_push_section("serving/models"), push_target=ON_CLUSTER)


def test_with_a_serving_pvc_an_override_outside_its_mount_is_refused():
    validate = params_to_dict(CLUSTER.validate)
    with pytest.raises(ParamsError, match=r"must lie under pipeline\.serving_mount_path \(/serving/models"):
        components.drift_reference(validate=validate, push=_push_section("/tmp/elsewhere"), push_target=WITH_PVC)


def test_drift_reference_accepts_the_compiled_target_and_a_run_local_folder(tmp_path):
    validate = dict(params_to_dict(CLUSTER.validate), drift=dict(params_to_dict(CLUSTER.validate.drift), reference=""))
    assert (
        components.drift_reference(validate=validate, push=_push_section("/serving/models/x"), push_target=WITH_PVC)
        == ""
    )
    local = push_target_settings(CLUSTER, on_cluster=False)  # run-local may push to a local folder
    assert components.drift_reference(validate=validate, push=_push_section(str(tmp_path)), push_target=local) == ""


def test_compile_hands_the_rule_to_push_and_drift_reference_as_a_constant(tmp_path):
    spec = yaml.safe_load_all(compile_pipeline(CLUSTER, tmp_path / "p.yaml").read_text()).__next__()
    tasks = spec["root"]["dag"]["tasks"]
    constant = tasks["drift-reference"]["inputs"]["parameters"]["push_target"]["runtimeValue"]["constant"]
    assert constant == {"serving_pvc": "", "serving_mount_path": "/serving/models", "on_cluster": True}
    condition = next(t for t in tasks.values() if "componentRef" in t and "condition" in t["componentRef"]["name"])
    push_task = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]["push"]
    assert push_task["inputs"]["parameters"]["push_target"]["runtimeValue"]["constant"] == constant


@pytest.mark.parametrize(
    "base,pvc,on_cluster,ok",
    [
        ("s3://b/m", "", True, True),
        ("gs://b/m", "", True, True),
        ("serving/models", "", True, False),
        ("serving/models", "", False, True),
        ("/serving/models", "models", True, True),
        ("/serving/models/x", "models", False, True),
        ("/serving/modelsx", "models", True, False),
        ("s3://b/m", "models", True, False),  # with a PVC the base must be on it
    ],
)
def test_the_rule(base, pvc, on_cluster, ok):
    def check() -> None:
        check_push_target(base, pvc, "/serving/models", on_cluster=on_cluster)

    if ok:
        check()
    else:
        with pytest.raises(ParamsError):
            check()
