"""The Kubeflow pipeline: compiled IR, parameters, submit, and local runs end to end."""

import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT, SAMPLE_DIR, tiny_params_dict
from PIL import Image

from petseg.cli import main
from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.params import load_params, params_to_dict, with_overrides
from petseg.components.ml.cluster import free_ports
from petseg.pipeline.component_io import restore_integers, scalar_metrics, section_params, write_image_sheet
from petseg.pipeline.images import Tag, code_tag, resolve_image
from petseg.pipeline.pipeline import RUN_SECTIONS, STEPS, PipelineOutputs, compile_pipeline, pipeline_arguments
from petseg.pipeline.run import TOKEN_ENV, failed_step, parse_overrides, submit

# params.yaml as a cluster would get it: the push target must outlive the pod (an object store here).
PROJECT_PARAMS = with_overrides(
    load_params(REPO_ROOT / "params.yaml"),
    {"push.model_base_path": "s3://petseg-models/serving", "push.server_model_base_path": ""},
)
TAG = code_tag()
IMAGE = resolve_image(PROJECT_PARAMS.pipeline.image, TAG)
GPU_IMAGE = resolve_image(PROJECT_PARAMS.pipeline.gpu_image, TAG)


def _compile(tmp_path, params=PROJECT_PARAMS):
    out = compile_pipeline(params, tmp_path / "pipeline.yaml")
    spec, *rest = yaml.safe_load_all(out.read_text())
    return spec, (rest[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if rest else {})


@pytest.fixture(scope="module")
def ir(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("ir"))


def _ir_name(step: str) -> str:
    """A step's task and executor name in the compiled IR (KFP writes a function's name in kebab case)."""
    return step.replace("_", "-")


IR_NAMES = tuple(_ir_name(step) for step in STEPS)


def _step_order(dag_tasks: dict) -> list[str]:
    """Task names in dependency order (each task after all it depends on)."""
    done: list[str] = []
    while len(done) < len(dag_tasks):
        ready = sorted(
            n for n, t in dag_tasks.items() if n not in done and set(t.get("dependentTasks", [])) <= set(done)
        )
        assert ready, f"cycle among {set(dag_tasks) - set(done)}"
        done.append(ready[0])
    return done


def _condition(spec):
    [(name, task)] = [(n, t) for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("condition")]
    return name, task


# ------------------------------------------------------------------------- the IR
def test_steps_run_in_order_with_push_under_the_blessed_condition(ir):
    spec, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    name, condition = _condition(spec)
    assert _step_order(tasks) == ["download", "drift-reference", "validate", "preprocess", "train", "evaluate", name]
    assert tasks["drift-reference"].get("dependentTasks", []) == []
    assert set(tasks["validate"]["dependentTasks"]) == {"download", "drift-reference"}
    assert tasks["validate"]["inputs"]["parameters"]["reference"] == {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "drift-reference"}
    }
    assert set(tasks["preprocess"]["dependentTasks"]) == {"download", "validate"}
    assert tasks["train"]["dependentTasks"] == ["preprocess"]
    assert set(tasks["evaluate"]["dependentTasks"]) == {"preprocess", "train"}
    assert "evaluate" in condition["dependentTasks"]
    assert condition["taskInfo"]["name"] == "blessed"
    assert (
        condition["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["push"]
    # push keeps this run's validation report with the version (the next run's drift reference)
    assert inner["push"]["inputs"]["artifacts"]["validation"] == {
        "componentInputArtifact": "pipelinechannel--validate-validation"
    }
    assert [t for t in IR_NAMES if t in tasks or t in inner] == list(IR_NAMES)


def test_train_asks_for_a_gpu_node_and_runs_the_gpu_image(ir):
    spec, platform = ir
    settings = PROJECT_PARAMS.pipeline
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert container["image"] == GPU_IMAGE
    accelerator = container["resources"]["accelerator"]
    assert accelerator["resourceType"] == settings.accelerator_type == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == str(settings.accelerator_limit)
    # Portable default: the device plugin's resource alone places the pod; no cloud-specific node label.
    assert "nodeSelector" not in platform["exec-train"]
    assert platform["exec-train"]["tolerations"] == [
        {"key": settings.gpu_toleration_key, "operator": "Exists", "effect": settings.gpu_toleration_effect}
    ]
    # The GPU step must not fall back to the CPU silently.
    assert spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["require_gpu"] == {
        "runtimeValue": {"constant": True}
    }
    assert set(platform) == {"exec-train"}  # no other step lands on (or reserves) a GPU node
    others = [e for n, e in spec["deploymentSpec"]["executors"].items() if n != "exec-train"]
    assert all("accelerator" not in e["container"]["resources"] for e in others)


def test_every_step_has_requests_limits_and_the_project_image(ir):
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {f"exec-{_ir_name(step)}" for step in STEPS}
    for step in STEPS:
        container = executors[f"exec-{_ir_name(step)}"]["container"]
        wanted = getattr(PROJECT_PARAMS.pipeline.resources, step)
        assert {
            k: container["resources"][k]
            for k in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit")
        } == {
            "resourceCpuRequest": wanted.cpu_request,
            "resourceCpuLimit": wanted.cpu_limit,
            "resourceMemoryRequest": wanted.memory_request,
            "resourceMemoryLimit": wanted.memory_limit,
        }, step
        if step != "train":
            assert container["image"] == IMAGE
        # Lightweight components that need nothing from PyPI at run time: the image has petseg and kfp.
        assert "pip install" not in " ".join(container["command"])


def _cached_steps(spec) -> set[str]:
    tasks = dict(spec["root"]["dag"]["tasks"])
    _, condition = _condition(spec)
    tasks.update(spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"])
    return {step for step in STEPS if tasks[_ir_name(step)]["cachingOptions"].get("enableCache")}


def test_caching_is_on_for_data_and_train_off_for_evaluate_and_push(tmp_path):
    pinned = with_overrides(
        PROJECT_PARAMS,
        {
            "pipeline.image": "registry.example/seg:1.2.3",
            "pipeline.gpu_image": "registry.example/seg-gpu@sha256:" + "a" * 64,
        },
    )
    spec, _ = _compile(tmp_path, pinned)
    assert _cached_steps(spec) == {"download", "validate", "preprocess", "train"}
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert images["exec-train"] == "registry.example/seg-gpu@sha256:" + "a" * 64  # pinned: used as is
    assert images["exec-push"] == "registry.example/seg:1.2.3"


@pytest.mark.parametrize(
    "tag,cached",
    [
        (Tag("0.1.0-g0123456789ab", "0123456789ab" + "0" * 28, True), True),
        (Tag("0.1.0-g0123456789ab-dirty", "0123456789ab" + "0" * 28, False), False),
        (Tag("0.1.0-nogit", None, False), False),
    ],
)
def test_derived_tags_name_the_code_and_caching_follows_them(tmp_path, monkeypatch, tag, cached):
    monkeypatch.setattr("petseg.pipeline.images.code_tag", lambda repo_dir=None: tag)
    spec, _ = _compile(tmp_path)
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert images.pop("exec-train") == f"ghcr.io/petseg/petseg-gpu:{tag.value}"
    assert set(images.values()) == {f"ghcr.io/petseg/petseg:{tag.value}"}
    assert _cached_steps(spec) == ({"download", "validate", "preprocess", "train"} if cached else set())
    push_task = spec["components"][_condition(spec)[1]["componentRef"]["name"]]["dag"]["tasks"]["push"]
    assert push_task["inputs"]["parameters"]["code"]["runtimeValue"]["constant"]["commit"] == (tag.commit or "")


def test_code_tag_is_version_and_commit_and_marks_dirty_and_untracked_checkouts(tmp_path):
    env = "git -c user.email=t@t -c user.name=t"
    assert code_tag(tmp_path).value == "0.1.0-nogit" and not code_tag(tmp_path).cacheable
    (tmp_path / "f.txt").write_text("1")
    subprocess.run(f"cd {tmp_path} && git init -q && git add f.txt && {env} commit -qm x", shell=True, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    clean = code_tag(tmp_path)
    assert clean == Tag(f"0.1.0-g{commit[:12]}", commit, True)
    (tmp_path / "f.txt").write_text("2")
    dirty = code_tag(tmp_path)
    assert re.fullmatch(rf"0\.1\.0-g{commit[:12]}-dirty-[0-9a-f]{{12}}", dirty.value), dirty
    assert (dirty.commit, dirty.cacheable) == (commit, False)
    assert resolve_image("reg.example:5000/seg", clean) == f"reg.example:5000/seg:0.1.0-g{commit[:12]}"
    assert resolve_image("reg.example:5000/seg:7", clean) == "reg.example:5000/seg:7"


def test_constraints_file_pins_what_petseg_requires_within_its_ranges_and_the_images_use_it():
    """Every requirement of petseg[s3,gcs] is pinned, each pin inside pyproject's range.

    The file is generated from the tested environment (`python -m petseg.pipeline.images
    constraints`); exact equality with whatever is installed now is not asserted, since a
    fresh install on another day or another Python may resolve other patch releases.
    """
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    from petseg.pipeline.images import CONSTRAINTS_FILE, IMAGE_EXTRAS, _norm

    lines = [line for line in CONSTRAINTS_FILE.read_text().splitlines() if line and not line.startswith("#")]
    pins = {_norm(name): Version(version) for name, version in (ln.split("==") for ln in lines)}
    direct = [Requirement(text) for text in requires("petseg") or []]
    for req in direct:
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *IMAGE_EXTRAS)):
            continue  # a test or deploy-check tool: not in the images
        name = _norm(req.name)
        assert name in pins, f"{name} is not pinned: python -m petseg.pipeline.images constraints"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert {"tensorflow", "kfp", "s3fs", "gcsfs", "fsspec", "dvc-s3"} <= set(pins)
    assert not {"pytest", "moto", "hypothesis", "ruff", "mypy"} & set(pins)  # test tools stay out of the images
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        text = (REPO_ROOT / "pipeline" / dockerfile).read_text()
        assert "-c pipeline/constraints.txt" in text and ".[s3,gcs]" in text, dockerfile


def test_parameters_mirror_params_yaml_with_its_values_as_defaults(ir):
    spec, _ = ir
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    raw_yaml = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw_yaml["push"].update(model_base_path="s3://petseg-models/serving", server_model_base_path="")
    assert list(parameters) == sorted(RUN_SECTIONS)
    for section in RUN_SECTIONS:
        assert parameters[section]["parameterType"] == "STRUCT"
        assert parameters[section]["defaultValue"] == raw_yaml[section], section


def test_images_and_gpu_settings_come_from_params(tmp_path):
    params = with_overrides(
        PROJECT_PARAMS,
        {
            "pipeline.image": "registry.example/seg:7",
            "pipeline.gpu_image": "registry.example/seg-gpu:7",
            "pipeline.accelerator_limit": 0,
        },
    )
    spec, platform = _compile(tmp_path, params)
    images = {n: e["container"]["image"] for n, e in spec["deploymentSpec"]["executors"].items()}
    assert images.pop("exec-train") == "registry.example/seg-gpu:7"
    assert set(images.values()) == {"registry.example/seg:7"}
    # accelerator_limit 0: train on an ordinary node, no GPU request, selector or toleration.
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert platform == {}


@pytest.mark.parametrize(
    "selector",
    [
        ("cloud.google.com/gke-accelerator", "nvidia-l4"),
        ("node.kubernetes.io/instance-type", "g5.xlarge"),
        ("kubernetes.azure.com/accelerator", "nvidia"),
    ],
)
def test_a_cloud_node_selector_is_applied_to_train_only(tmp_path, selector):
    key, value = selector
    params = with_overrides(
        PROJECT_PARAMS, {"pipeline.gpu_node_selector_key": key, "pipeline.gpu_node_selector_value": value}
    )
    _, platform = _compile(tmp_path, params)
    assert platform["exec-train"]["nodeSelector"]["labels"] == {key: value}
    with pytest.raises(ParamsError, match=r"set both pipeline\.gpu_node_selector_key and"):
        compile_pipeline(with_overrides(params, {"pipeline.gpu_node_selector_value": ""}), tmp_path / "x.yaml")


def test_train_outputs_a_savedmodel_only_model_and_a_separate_checkpoints_artifact(ir):
    spec, _ = ir
    outputs = spec["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert outputs["trained_model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["checkpoints"]["artifactType"]["schemaTitle"] == "system.Artifact"
    push_inputs = spec["components"]["comp-push"]["inputDefinitions"]["artifacts"]
    # no checkpoints or records downloaded to push: the card reads train's small metrics and curves files
    assert set(push_inputs) == {"trained_model", "evaluation", "validation", "training_metrics", "training_log"}
    push_outputs = spec["components"]["comp-push"]["outputDefinitions"]["artifacts"]
    assert push_outputs["model_card"]["artifactType"]["schemaTitle"] == "system.HTML"  # the KFP UI renders it


@pytest.mark.parametrize("base", ["serving/models", "/abs/models", "memory://models", "ram://models"])
def test_compile_refuses_a_push_target_inside_the_pod_in_one_line(tmp_path, capsys, base):
    out = tmp_path / "p.yaml"
    code = main(
        [
            "pipeline",
            "compile",
            "-o",
            str(out),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--param",
            f"push.model_base_path={base}",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert err.count("\n") == 1 and f"push.model_base_path '{base}' is inside the push pod" in err
    assert "s3://" in err and "gs://" in err and "pipeline.serving_pvc" in err


@pytest.mark.parametrize(
    "overrides",
    [
        {"push.model_base_path": "gs://bucket/models"},
        {"push.model_base_path": "s3://bucket/models"},
        {"push.model_base_path": "/serving/models/prod", "pipeline.serving_pvc": "models"},
    ],
)
def test_compile_accepts_an_object_store_or_a_serving_pvc(tmp_path, overrides):
    assert compile_pipeline(with_overrides(PROJECT_PARAMS, overrides), tmp_path / "p.yaml").is_file()


def test_submit_refuses_a_pod_local_push_target_before_contacting_the_cluster():
    local = with_overrides(PROJECT_PARAMS, {"push.model_base_path": "serving/models"})
    with pytest.raises(ParamsError, match="is inside the push pod"):  # not "cannot reach": checked first
        submit(local, "http://127.0.0.1:9")


def test_serving_pvc_is_mounted_where_a_step_reads_the_model_base_path(tmp_path):
    params = with_overrides(
        PROJECT_PARAMS, {"pipeline.serving_pvc": "models", "push.model_base_path": "/serving/models/prod"}
    )
    _, platform = _compile(tmp_path, params)
    for step in ("drift-reference", "validate", "evaluate", "push"):
        assert platform[f"exec-{step}"]["pvcMount"][0]["mountPath"] == "/serving/models"
    for step in ("download", "preprocess", "train"):
        assert "pvcMount" not in platform.get(f"exec-{step}", {})
    outside = with_overrides(params, {"push.model_base_path": "serving/models"})
    with pytest.raises(ParamsError, match=r"push\.model_base_path .* must lie under pipeline\.serving_mount_path"):
        compile_pipeline(outside, tmp_path / "bad.yaml")


def test_bad_resource_quantity_names_the_key(tmp_path):
    with pytest.raises(ParamsError, match=r"'pipeline.resources.train.memory_limit' is not a Kubernetes quantity"):
        with_overrides(PROJECT_PARAMS, {"pipeline.resources.train.memory_limit": "lots"})  # refused as params load


def test_a_quantity_kubernetes_takes_but_kfp_cannot_compile_names_the_key(tmp_path):
    params = with_overrides(PROJECT_PARAMS, {"pipeline.resources.train.memory_limit": "32e9"})
    with pytest.raises(
        ParamsError, match=r"'pipeline.resources.train.memory_limit' '32e9' is a Kubernetes quantity KFP"
    ):
        compile_pipeline(params, tmp_path / "p.yaml")
    assert not (tmp_path / "p.yaml").exists()


def test_pipeline_outputs_are_listed_by_run_local(ir):
    spec, _ = ir
    outputs = spec["root"]["outputDefinitions"]
    assert set(outputs["artifacts"]) | set(outputs["parameters"]) == set(PipelineOutputs._fields)


def test_compile_cli_writes_the_package_with_overrides(tmp_path, capsys):
    out = tmp_path / "out" / "petseg.yaml"
    code = main(
        [
            "pipeline",
            "compile",
            "-o",
            str(out),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--param",
            "train.epochs=3",
            "--param",
            "data.source=synthetic",
            "--param",
            "push.model_base_path=gs://bucket/models",
        ]
    )
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    defaults = next(yaml.safe_load_all(out.read_text()))["root"]["inputDefinitions"]["parameters"]
    assert defaults["train"]["defaultValue"]["epochs"] == 3
    assert defaults["data"]["defaultValue"]["source"] == "synthetic"


def test_image_cli_prints_the_one_image_setting(capsys):
    assert main(["pipeline", "image", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    assert main(["pipeline", "image", "--gpu", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    assert capsys.readouterr().out.split() == [IMAGE, GPU_IMAGE]
    assert IMAGE.startswith("ghcr.io/petseg/petseg:0.1.0-")


# ------------------------------------------------------------- parameter passing
def test_section_params_restores_struct_floats_and_validates():
    # A KFP dict parameter travels as a protobuf Struct: every number becomes a float.
    as_struct = json.loads(json.dumps(params_to_dict(PROJECT_PARAMS.train)).replace(": 20,", ": 20.0,"))
    as_struct["epochs"], as_struct["seed"], as_struct["augment"]["flip"] = 20.0, 42.0, False
    train = section_params("train", as_struct)
    assert train.epochs == 20 and isinstance(train.epochs, int) and train.augment.flip is False
    assert section_params("data", {"synthetic": {"train_examples": 24.0}}).synthetic.train_examples == 24
    with pytest.raises(ParamsError, match=r"pipeline parameter 'train': 'train.epochs' must be an integer"):
        section_params("train", {"epochs": 2.5})
    with pytest.raises(ParamsError, match=r"unknown key 'train.epoch'"):
        section_params("train", {"epoch": 2.0})
    assert restore_integers(type(PROJECT_PARAMS.train), {"learning_rate": 1.0}) == {"learning_rate": 1.0}


def test_pipeline_arguments_round_trip_through_section_params():
    args = pipeline_arguments(PROJECT_PARAMS)
    assert list(args) == list(RUN_SECTIONS)
    for section, value in args.items():
        assert section_params(section, json.loads(json.dumps(value))) == getattr(PROJECT_PARAMS, section)


def test_parse_overrides_types_values_and_rejects_garbage():
    assert parse_overrides(
        [
            "train.epochs=2",
            "data.source=synthetic",
            "train.cache=false",
            "validate.critical=[ids_unique]",
            "pipeline.pipeline_root=",
        ]
    ) == {
        "train.epochs": 2,
        "data.source": "synthetic",
        "train.cache": False,
        "validate.critical": ["ids_unique"],
        "pipeline.pipeline_root": "",
    }
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_failed_step_is_named_without_terminal_colours():
    error = RuntimeError(
        "Pipeline \x1b[95m'petseg'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
        "Inner task failed: \x1b[96m'validate'\x1b[0m."
    )
    assert failed_step(error) == "step validate failed"


def test_metrics_and_image_sheet_helpers(tmp_path):
    assert scalar_metrics(
        {"mean_iou": 0.5, "iou": {"pet": 0.25, "border": None}, "ok": True, "confusion_matrix": {"labels": ["a"]}}
    ) == {"mean_iou": 0.5, "iou_pet": 0.25}
    png = tmp_path / "sample_predictions.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    assert write_image_sheet("Preds <test>", [png], tmp_path / "sheet.html") == 1
    page = (tmp_path / "sheet.html").read_text()
    assert "data:image/png;base64," in page and "Preds &lt;test&gt;" in page and "sample predictions" in page


# -------------------------------------------------------------------------- submit
def test_submit_to_an_unreachable_host_ends_with_one_line_quickly(capsys):
    started = time.monotonic()
    code = main(
        [
            "pipeline",
            "submit",
            "--host",
            f"http://127.0.0.1:{free_ports(1)[0]}",
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--param",
            "push.model_base_path=gs://b/m",
        ]
    )
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1 and elapsed < 10
    assert err.count("\n") == 1 and "cannot reach Kubeflow Pipelines at http://127.0.0.1:" in err
    assert "Traceback" not in err


def test_submit_to_something_that_is_not_kfp(capsys):
    with _fake_api(healthz_status=404) as (url, _):
        code = main(
            [
                "pipeline",
                "submit",
                "--host",
                url,
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "--param",
                "push.model_base_path=gs://b/m",
            ]
        )
    err = capsys.readouterr().err
    assert code == 1 and "is not a Kubeflow Pipelines API: HTTP 404" in err and err.count("\n") == 1


def test_submit_creates_a_run_with_params_and_token_and_prints_its_url(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "secret-token")
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    with _fake_api() as (url, requests):
        code = main(
            [
                "pipeline",
                "submit",
                "--host",
                url + "/",
                "--experiment",
                "nightly",
                "--run-name",
                "r1",
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "--param",
                "train.epochs=7",
                "--param",
                "push.model_base_path=s3://petseg-models/serving",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert f"run run-42 in experiment nightly: {url}/#/runs/details/run-42" in out
    assert all(auth == "Bearer secret-token" for _, _, _, auth in requests)
    [experiment] = [body for method, path, body, _ in requests if method == "POST" and path.endswith("/experiments")]
    [run] = [body for method, path, body, _ in requests if method == "POST" and path.endswith("/runs")]
    assert experiment["display_name"] == "nightly"
    assert run["display_name"] == "r1" and run["experiment_id"] == "exp-1"
    parameters = run["runtime_config"]["parameters"]
    assert set(parameters) == set(RUN_SECTIONS) and parameters["train"]["epochs"] == 7
    assert parameters["data"] == params_to_dict(PROJECT_PARAMS.data)
    package = run["pipeline_spec"]  # the compiled pipeline and its Kubernetes platform spec
    assert set(package["pipeline_spec"]["root"]["dag"]["tasks"]) >= {"download", "train", "evaluate"}
    assert "exec-train" in package["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


class _fake_api:
    """A tiny stand-in for the KFP v2beta1 REST API that records what it is sent."""

    def __init__(self, healthz_status: int = 200):
        self.healthz_status = healthz_status
        self.requests: list = []

    def __enter__(self):
        requests, healthz_status = self.requests, self.healthz_status

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                requests.append(("GET", self.path.split("?")[0], None, self.headers.get("Authorization")))
                if self.path.startswith("/apis/v2beta1/healthz"):
                    return self._reply(healthz_status, {"multi_user": False})
                if self.path.startswith("/apis/v2beta1/experiments"):
                    return self._reply(200, {"experiments": []})
                self._reply(404, {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(("POST", self.path, body, self.headers.get("Authorization")))
                if self.path == "/apis/v2beta1/experiments":
                    return self._reply(200, {"experiment_id": "exp-1", "display_name": body["display_name"]})
                if self.path == "/apis/v2beta1/runs":
                    return self._reply(200, {"run_id": "run-42", "display_name": body["display_name"]})
                self._reply(404, {})

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}", self.requests

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_submit_rejects_a_host_without_scheme():
    with pytest.raises(PetsegError, match="give the API's URL with its scheme"):
        submit(PROJECT_PARAMS, "localhost:8080")


# ---------------------------------------------------------------- local runs (slow)
LOCAL_RUN = {
    "model": {"architecture": "unet", "encoder_weights": "none", "unet": {"base_filters": 8, "depth": 2}},
    "train": {"epochs": 1, "batch_size": 8, "shuffle_buffer": 32},
    "evaluate": {"min_mean_iou": 0.0, "min_accuracy": 0.0, "batch_size": 8, "sample_predictions": 2},
    "push": {"warmup_requests": 1},
}


@pytest.fixture(scope="module")
def local_workdir(tmp_path_factory):
    """Shared by the local runs so the second reuses the first's cached data and train steps."""
    return tmp_path_factory.mktemp("kfp-local")


def _run_local(
    workdir: Path, tmp_path: Path, extra: dict, capsys, args: tuple[str, ...] = ()
) -> tuple[int, str, str, Path]:
    """Run `petseg pipeline run-local` on the tiny set: exit code, stdout (from the summary on), stderr, models."""
    models = tmp_path / "models"
    params_file = tmp_path / "params.yaml"
    params = tiny_params_dict({**LOCAL_RUN, **extra, "push": {**LOCAL_RUN["push"], "model_base_path": str(models)}})
    params_file.write_text(yaml.safe_dump(params))
    code = main(["pipeline", "run-local", "--workdir", str(workdir), "--cache", "--params", str(params_file), *args])
    captured = capsys.readouterr()
    out = captured.out[captured.out.index("pipeline run-local: finished") :] if code == 0 else captured.out
    return code, out, captured.err, models


def _listed(summary: str) -> dict[tuple[str, str], str]:
    rows = [line.split(None, 2) for line in summary.splitlines()[1:] if line.startswith("  ")]
    return {(step, name): where for step, name, where in rows}


@pytest.mark.slow
def test_local_run_end_to_end_pushes_a_blessed_model(local_workdir, tmp_path, capsys):
    code, summary, _, models = _run_local(local_workdir, tmp_path, {}, capsys)
    assert code == 0, summary[-3000:]
    listed = _listed(summary)
    for step, name in [
        ("download", "raw"),
        ("validate", "validation"),
        ("validate", "validation_report"),
        ("preprocess", "records"),
        ("train", "trained_model"),
        ("evaluate", "evaluation"),
        ("evaluate", "metrics"),
        ("evaluate", "confusion_matrix"),
        ("evaluate", "predictions"),
    ]:
        assert Path(listed[(step, name)]).exists(), (step, name)
    assert (Path(listed[("download", "raw")]) / "examples.csv").is_file()
    assert "<html" in Path(listed[("validate", "validation_report")]).read_text().lower()
    assert (Path(listed[("preprocess", "records")]) / "manifest.json").is_file()
    # The Model artifact is the SavedModel alone; the checkpoints are their own artifact.
    model_dir = Path(listed[("train", "trained_model")])
    assert (model_dir / "saved_model.pb").is_file()
    assert sorted(p.name for p in model_dir.iterdir()) <= [
        "assets",
        "assets.extra",
        "fingerprint.pb",
        "saved_model.pb",
        "variables",
    ]
    assert not list(model_dir.rglob("*.weights.h5")) and not list(model_dir.rglob("*.keras"))
    assert (Path(listed[("train", "checkpoints")]) / "checkpoints").is_dir()
    assert "mean_iou" in json.loads(Path(listed[("evaluate", "metrics")]).read_text())
    matrix = json.loads(Path(listed[("evaluate", "confusion_matrix")]).read_text())["confusionMatrix"]
    assert [s["displayName"] for s in matrix["annotationSpecs"]] == ["pet", "background", "border"]
    assert "data:image/png;base64," in Path(listed[("evaluate", "predictions")]).read_text()
    assert (models / "petseg" / "1" / "saved_model.pb").is_file()
    lineage = json.loads((models / "petseg" / "1" / "lineage.json").read_text())
    assert lineage["runner"] == "kubeflow" and lineage["run_name"].startswith("petseg-") and lineage["run_id"]
    assert listed[("push", "pushed")].startswith(str(models / "petseg" / "1"))
    # The same lineage as the CLI writes: code, every params section, data, metrics.
    records_manifest = Path(listed[("preprocess", "records")]) / "manifest.json"
    assert lineage["git_commit"] == TAG.commit and len(lineage["git_commit"]) == 40
    assert lineage["data_manifest_sha256"] == hashlib.sha256(records_manifest.read_bytes()).hexdigest()
    assert lineage["params"]["train"]["epochs"] == 1 and lineage["params"]["data"]["source"] == "synthetic"
    assert lineage["code_images"] == {"components": IMAGE, "train": GPU_IMAGE}
    assert set(lineage["metrics"]) >= {"mean_iou", "pixel_accuracy"}
    assert main(["rollback", "--list", "--params", str(tmp_path / "params.yaml")]) == 0
    [row] = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    card_page = models / "petseg" / "1" / "model_card" / "model_card.html"
    assert row[0] == "1" and TAG.commit[:8] in row[3] and row[-2] == lineage["data_manifest_sha256"][:12]
    assert row[-1] == str(card_page)

    # The model card: in the store beside the version, and push's HTML artifact (what the KFP UI shows).
    assert listed[("push", "model_card")] == str(card_page)
    assert sorted(p.name for p in card_page.parent.iterdir()) == ["model_card.html", "model_card.json", "model_card.md"]
    run_dir = Path(listed[("evaluate", "evaluation")]).parent.parent
    assert (run_dir / "push" / "model_card").read_bytes() == card_page.read_bytes()
    card = json.loads((card_page.parent / "model_card.json").read_text())
    evaluated = json.loads((Path(listed[("evaluate", "evaluation")]) / "metrics.json").read_text())
    assert card["evaluation"]["mean_iou"] == evaluated["mean_iou"] and card["model"]["version"] == 1
    assert card["lineage"]["git_commit"] == lineage["git_commit"] and card["lineage"]["runner"] == "kubeflow"
    assert card["data"]["counts"] == json.loads(records_manifest.read_text())["counts"]  # via the blessing
    assert card["training"]["epochs_run"] == 1 and card["warnings"][0].startswith("TRAINED ON SYNTHETIC DATA")
    assert card["missing"] == [] or all("release" in m for m in card["missing"]), card["missing"]

    # Push kept this run's validation report with the version; the next run's validate compares with it.
    validation = Path(listed[("validate", "validation")])
    kept = models / "petseg" / "1" / "drift_reference"
    for name in ("summary.json", "examples.csv"):
        assert (kept / name).read_bytes() == (validation / name).read_bytes()
    assert json.loads((validation / "summary.json").read_text())["drift_reference"] is None  # nothing served then
    code, summary, _, _ = _run_local(local_workdir, tmp_path, {}, capsys)
    assert code == 0, summary[-3000:]
    again = json.loads((Path(_listed(summary)[("validate", "validation")]) / "summary.json").read_text())
    assert again["success"] and again["drift_reference"]["dir"] == str(kept)


@pytest.mark.slow
def test_local_run_below_threshold_ends_green_and_skips_push(local_workdir, tmp_path, capsys):
    code, summary, _, models = _run_local(
        local_workdir, tmp_path, {"evaluate": {**LOCAL_RUN["evaluate"], "min_mean_iou": 1.0}}, capsys
    )
    assert code == 0, summary[-3000:]
    assert "not blessed: mean IoU" in _listed(summary)[("push", "skipped")]
    assert not models.exists()
    blessing = json.loads((Path(_listed(summary)[("evaluate", "evaluation")]) / "blessing.json").read_text())
    assert blessing["blessed"] is False


@pytest.mark.slow
def test_a_failed_validation_keeps_its_html_report(tmp_path, capsys):
    """A real trimap with a value outside {1, 2, 3}: validate fails the run, and its report stays."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"real sample data not found at {SAMPLE_DIR}")
    archives = shutil.copytree(SAMPLE_DIR, tmp_path / "archives")
    trimap_path = sorted((archives / "annotations" / "trimaps").glob("*.png"))[0]
    trimap = np.array(Image.open(trimap_path))
    trimap[3, 3] = 7
    Image.fromarray(trimap).save(trimap_path)
    workdir = tmp_path / "kfp"
    code, out, err, models = _run_local(
        workdir,
        tmp_path,
        {
            "data": {"source": "archives", "archives": {"path": str(archives), "verify_checksums": False}},
            "validate": {"min_train_examples": 1, "min_test_examples": 1},
        },
        capsys,
        args=("--param", "data.source=archives"),
    )  # run-local defaults to the synthetic set
    assert code == 1 and err.startswith("petseg pipeline: error: local pipeline run failed: step validate failed")
    [report] = list((workdir / "runs").rglob("validate/report"))
    page = report.read_text()
    assert "<html" in page.lower() and "mask_values_in_trimap_set" in page
    assert f"validate: the report is at {report}" in out
    assert not models.exists()


@pytest.mark.slow
def test_local_run_stops_at_a_failed_validation_with_one_line(local_workdir, tmp_path, capsys):
    code, out, err, models = _run_local(local_workdir, tmp_path, {"validate": {"min_train_examples": 1000}}, capsys)
    assert code == 1, out[-3000:]
    assert "train_count_in_bounds" in out  # the step's own error, in its log
    assert err.startswith("petseg pipeline: error: local pipeline run failed: step validate failed")
    assert err.count("\n") == 1 and not models.exists()
