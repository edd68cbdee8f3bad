"""push / rollback: the gate, TF Serving's layout, warm-up, infra validation, atomicity, retention, lineage."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from helpers import write_blessing
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from petseg.cli import main
from petseg.components.contracts import signatures
from petseg.components.contracts.lineage import Lineage, collect_lineage
from petseg.components.contracts.rawdata import sha256_file
from petseg.components.core.errors import PetsegError
from petseg.components.core.fsutil import read_json
from petseg.components.core.params import EvaluateParams, Params, PushParams
from petseg.components.evaluate import evaluate
from petseg.components.push import push
from petseg.components.store import model_store, storage
from petseg.components.store.model_store import ModelStore
from petseg.components.store.warmup import WARMUP_FILE, InfraValidationError, validate_served_copy


@pytest.fixture
def push_params(tmp_path) -> PushParams:
    return PushParams(
        model_base_path=str(tmp_path / "serving"), model_name="petseg", keep_versions=3, warmup_requests=4
    )


def push_blessed(model_dir, params, folder, **kw):
    return push(model_dir, write_blessing(model_dir, params, folder), params, Lineage(), **kw)


def versions_on_disk(params) -> list[str]:
    """Every folder under the model root (staging and deleting ones included), not the store's own files."""
    root = ModelStore.from_params(params).root
    return sorted(
        n for n in os.listdir(root) if n not in (model_store.RECORD_FILE, model_store.LOCK_FILE, model_store.CLAIMS_DIR)
    )


def served_config(params) -> model_server_config_pb2.ModelConfig:
    with open(os.path.join(params.model_base_path, "models.config")) as fh:
        config = text_format.Parse(fh.read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = [c for c in config.model_config_list.config if c.name == params.model_name]
    return entry


def write_params(tmp_path, params: PushParams, evaluate_section: str = "") -> str:
    path = tmp_path / "params.yaml"
    path.write_text(
        f"push:\n  model_base_path: {params.model_base_path}\n  keep_versions: {params.keep_versions}\n"
        + evaluate_section
    )
    return str(path)


# ------------------------------------------------------------------ the gate
def test_below_threshold_model_is_declined_with_one_line_and_exit_0(
    rule_savedmodels, coded_records, tmp_path, push_params, capsys
):
    params_file = write_params(tmp_path, push_params, "evaluate:\n  min_mean_iou: 0.6\n")
    model = str(rule_savedmodels["wrong_70"])
    assert (
        main(
            [
                "evaluate",
                "--model",
                model,
                "--records",
                str(coded_records),
                "--out",
                str(tmp_path / "ev"),
                "--params",
                params_file,
            ]
        )
        == 0
    )
    capsys.readouterr()
    record = tmp_path / "push.json"
    assert (
        main(
            [
                "push",
                "--model",
                model,
                "--evaluation",
                str(tmp_path / "ev"),
                "--records",
                str(coded_records),
                "--out",
                str(record),
                "--card-out",
                str(tmp_path / "card"),
                "--params",
                params_file,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[0].startswith("push: declined: model not blessed: mean IoU")
    assert out[1] == f"push: model card copy: {tmp_path / 'card' / 'model_card.html'}"
    assert read_json(record)["status"] == "declined" and read_json(record)["card"] is None
    assert not os.path.exists(ModelStore.from_params(push_params).root)
    # the declined model's card says so, with the reason, and names no version to query
    card = read_json(tmp_path / "card" / "model_card.json")
    assert card["model"]["status"] == "declined" and card["model"]["version"] is None
    assert card["warnings"][-1].startswith("NOT PUSHED (declined): model not blessed: mean IoU")
    assert card["use"]["queries"] == [] and card["evaluation"]["blessed"] is False


def test_regression_against_the_served_model_is_not_pushed(rule_savedmodels, coded_records, tmp_path, push_params):
    assert push_blessed(rule_savedmodels["perfect"], push_params, tmp_path).version == 1
    evaluation = tmp_path / "ev"
    result = evaluate(
        rule_savedmodels["wrong_10"],
        coded_records,
        EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, max_regression=0.05),
        push_params,
        evaluation,
    )
    assert not result.blessed and result.baseline_version == 1
    declined = push(rule_savedmodels["wrong_10"], evaluation, push_params, Lineage())
    assert declined.status == "declined" and "served version 1" in declined.reason
    assert versions_on_disk(push_params) == ["1"] and ModelStore.from_params(push_params).served_version() == 1


def test_stale_or_foreign_blessings_are_refused(rule_savedmodels, tmp_path, push_params):
    for_perfect = write_blessing(rule_savedmodels["perfect"], push_params, tmp_path)
    with pytest.raises(PetsegError, match="different model"):
        push(rule_savedmodels["wrong_10"], for_perfect, push_params, Lineage())
    early = write_blessing(rule_savedmodels["wrong_10"], push_params, tmp_path)  # made while nothing is served
    push(rule_savedmodels["perfect"], for_perfect, push_params, Lineage())
    with pytest.raises(PetsegError, match="served version changed since evaluation"):
        push(rule_savedmodels["wrong_10"], early, push_params, Lineage())
    with pytest.raises(PetsegError, match="run `petseg evaluate` first"):
        push(rule_savedmodels["wrong_10"], tmp_path / "missing", push_params, Lineage())
    assert versions_on_disk(push_params) == ["1"]


# ------------------------------------------------------- a real export, end to end
def test_evaluate_then_push_the_real_export(tiny_savedmodel, tiny_records, tmp_path, push_params, capsys):
    params_file = write_params(tmp_path, push_params, "evaluate:\n  min_mean_iou: 0.0\n  min_accuracy: 0.0\n")
    args = ["--model", str(tiny_savedmodel), "--records", str(tiny_records), "--params", params_file]
    assert main(["evaluate", *args, "--out", str(tmp_path / "ev")]) == 0
    card_out = tmp_path / "card"
    push_args = [
        "--evaluation",
        str(tmp_path / "ev"),
        "--out",
        str(tmp_path / "push.json"),
        "--card-out",
        str(card_out),
    ]
    assert main(["push", *args, *push_args]) == 0
    out = capsys.readouterr().out
    assert "version 1 is now served" in out

    version_dir = os.path.join(ModelStore.from_params(push_params).root, "1")
    assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
    assert read_json(tmp_path / "push.json")["status"] == "pushed"

    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset([os.path.join(version_dir, WARMUP_FILE)])
    ]
    assert len(logs) == 4
    requests = [log.predict_log.request for log in logs]
    assert {r.model_spec.name for r in requests} == {"petseg"}
    assert [r.model_spec.signature_name for r in requests] == [
        signatures.SIGNATURE_IMAGES,
        signatures.SIGNATURE_BYTES,
        signatures.SIGNATURE_PNG,
        signatures.SIGNATURE_IMAGES,
    ]
    assert tf.make_ndarray(requests[2].inputs[signatures.INPUT_BYTES])[0][:4] == b"\x89PNG"
    images = tf.make_ndarray(requests[0].inputs[signatures.INPUT_IMAGES])
    assert images.dtype == np.uint8 and images.shape == (1, 64, 64, 3)  # the records' image size
    assert tf.make_ndarray(requests[1].inputs[signatures.INPUT_BYTES])[0][:4] == b"\x89PNG"

    lineage = read_json(os.path.join(version_dir, model_store.LINEAGE_FILE))
    assert lineage["version"] == 1 and lineage["model_fingerprint"] == model_store.model_fingerprint(tiny_savedmodel)
    assert lineage["data_manifest_sha256"] == sha256_file(tiny_records / "manifest.json")
    assert "git_commit" in lineage and lineage["params"]["push"]["keep_versions"] == 3
    evaluated = read_json(tmp_path / "ev" / "metrics.json")
    assert lineage["blessing"]["blessed"] is True and lineage["metrics"]["mean_iou"] == evaluated["mean_iou"]
    assert lineage["infra_validation"]["requests"] == 4

    entry = served_config(push_params)
    assert entry.base_path == os.path.abspath(ModelStore.from_params(push_params).root)
    assert list(entry.model_version_policy.specific.versions) == [1] and dict(entry.version_labels) == {}

    # the card beside the version (published with it), and the same card in --card-out
    store_card = os.path.join(version_dir, "model_card")
    assert sorted(os.listdir(store_card)) == ["model_card.html", "model_card.json", "model_card.md"]
    assert f"push: model card: {store_card}/model_card.html" in out
    for name in os.listdir(store_card):
        assert (card_out / name).read_bytes() == Path(store_card, name).read_bytes()
    assert read_json(tmp_path / "push.json")["card"] == store_card

    assert main(["rollback", "--list", "--params", params_file]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["version", "served"] and table[1].split()[:2] == ["1", "*"]
    assert table[0].split()[-1] == "card" and table[1].split()[-1] == f"{store_card}/model_card.html"


def test_lineage_records_the_git_commit_and_data_manifest(coded_records, tmp_path):
    lineage = collect_lineage(coded_records, Params(), repo_dir=tmp_path)  # not a git checkout
    assert lineage.git_commit is None and lineage.data_manifest_sha256 == sha256_file(coded_records / "manifest.json")
    os.system(f"cd {tmp_path} && git init -q && git -c user.email=t@t -c user.name=t commit -q --allow-empty -m x")
    commit = collect_lineage(None, Params(), repo_dir=tmp_path).git_commit
    assert commit is not None and len(commit) == 40


# ------------------------------------------------------- versions and retention
def test_versions_are_numbered_and_only_the_newest_are_kept(rule_savedmodels, tmp_path, push_params):
    params = dataclasses.replace(push_params, keep_versions=2, warmup_requests=0)
    other = model_server_config_pb2.ModelServerConfig()
    other.model_config_list.config.add(name="other", base_path="/models/other", model_platform="tensorflow")
    os.makedirs(params.model_base_path)
    with open(os.path.join(params.model_base_path, "models.config"), "w") as fh:
        fh.write(text_format.MessageToString(other))

    results = [push_blessed(rule_savedmodels[name], params, tmp_path) for name in ("perfect", "wrong_10", "wrong_30")]
    assert [r.version for r in results] == [1, 2, 3]
    assert [r.removed_versions for r in results] == [[], [], [1]]
    assert versions_on_disk(params) == ["2", "3"]
    assert not os.path.exists(os.path.join(ModelStore.from_params(params).root, "3", WARMUP_FILE))
    entry = served_config(params)
    assert list(entry.model_version_policy.specific.versions) == [3] and dict(entry.version_labels) == {}
    config = Path(os.path.join(params.model_base_path, "models.config")).read_text()
    assert 'name: "other"' in config  # other models' entries are kept

    again = push_blessed(rule_savedmodels["wrong_30"], params, tmp_path)
    assert again.status == "unchanged" and again.version == 3 and versions_on_disk(params) == ["2", "3"]


def test_infra_validation_failure_is_not_pushed_and_the_reason_recorded(
    rule_savedmodels, tmp_path, push_params, capsys
):
    push_blessed(rule_savedmodels["perfect"], push_params, tmp_path)
    record = tmp_path / "push.json"
    with pytest.raises(InfraValidationError, match=r"warm-up request 0 \(serving_default\) failed.*mask shape"):
        push_blessed(rule_savedmodels["broken"], push_params, tmp_path, record_file=record)
    assert read_json(record)["status"] == "infra_validation_failed" and "mask shape" in read_json(record)["reason"]
    assert versions_on_disk(push_params) == ["1"] and ModelStore.from_params(push_params).served_version() == 1

    (tmp_path / "ev").mkdir()
    os.replace(write_blessing(rule_savedmodels["broken"], push_params, tmp_path), tmp_path / "ev" / "blessing.json")
    params_file = write_params(tmp_path, push_params)
    code = main(
        [
            "push",
            "--model",
            str(rule_savedmodels["broken"]),
            "--evaluation",
            str(tmp_path / "ev"),
            "--out",
            str(record),
            "--card-out",
            str(tmp_path / "card"),
            "--params",
            params_file,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "card").exists()  # a failed push writes no card
    assert code == 1 and len(err) == 1 and err[0].startswith("petseg push: error: infra validation")


# ------------------------------------------------------------- failure and atomicity
def test_a_push_failing_mid_copy_keeps_the_previous_version(rule_savedmodels, tmp_path, push_params, monkeypatch):
    push_blessed(rule_savedmodels["perfect"], push_params, tmp_path)
    v1 = os.path.join(ModelStore.from_params(push_params).root, "1")
    before = model_store.model_fingerprint(v1)
    config_before = Path(os.path.join(push_params.model_base_path, "models.config")).read_text()
    real_copy, copied = storage.copy_file, []

    def copy_until_disk_full(src, dst):
        if len(copied) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", dst)
        copied.append(src)
        real_copy(src, dst)

    monkeypatch.setattr(storage, "copy_file", copy_until_disk_full)
    with pytest.raises(
        PetsegError, match=r"No space left on device.*nothing was published and version 1 is still served"
    ):
        push_blessed(rule_savedmodels["wrong_10"], push_params, tmp_path)
    assert versions_on_disk(push_params) == ["1"]  # no partial version, no staging folder left
    assert model_store.model_fingerprint(v1) == before
    assert Path(os.path.join(push_params.model_base_path, "models.config")).read_text() == config_before


def test_a_polling_reader_only_ever_sees_complete_versions(rule_savedmodels, tmp_path, push_params, monkeypatch):
    params = dataclasses.replace(push_params, keep_versions=1)
    root = ModelStore.from_params(params).root
    source = rule_savedmodels["perfect"]
    complete = {os.path.relpath(os.path.join(d, f), source) for d, _, fs in os.walk(source) for f in fs}
    complete |= {model_store.LINEAGE_FILE, WARMUP_FILE}
    complete |= {f"model_card/{name}" for name in ("model_card.html", "model_card.md", "model_card.json")}
    real_copy = storage.copy_file

    def slow_copy(src, dst):  # widen the window in which a non-atomic push would show half a model
        time.sleep(0.03)
        real_copy(src, dst)

    monkeypatch.setattr(storage, "copy_file", slow_copy)
    seen, partial, stop, passes = set(), [], threading.Event(), [0]

    def poll():
        while not stop.is_set():
            passes[0] += 1
            for name in os.listdir(root) if os.path.isdir(root) else []:
                if not name.isdigit():
                    continue
                folder = os.path.join(root, name)
                files = {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}
                if not os.path.isdir(folder):
                    continue  # retention took it away while we looked: gone, not partial
                if files == complete:
                    seen.add(name)
                else:
                    partial.append((name, sorted(complete - files)))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for name in ("perfect", "wrong_10", "wrong_30"):
            push_blessed(rule_savedmodels[name], params, tmp_path)
        after = passes[0]
        deadline = time.monotonic() + 10
        while passes[0] < after + 2 and time.monotonic() < deadline:  # let it look at the last version too
            time.sleep(0.01)
    finally:
        stop.set()
        reader.join()
    assert partial == []
    assert seen == {"1", "2", "3"}
    assert versions_on_disk(params) == ["3"]


# ------------------------------------------------------------------ rollback
def test_rollback_serves_an_earlier_version_and_lists_lineage(rule_savedmodels, tmp_path, push_params, capsys):
    for i, name in enumerate(("perfect", "wrong_10", "wrong_30")):
        push(
            rule_savedmodels[name],
            write_blessing(rule_savedmodels[name], push_params, tmp_path, mean_iou=0.7 + i / 10),
            push_params,
            Lineage(git_commit=f"{i}" * 40),
        )
    assert ModelStore.from_params(push_params).served_version() == 3

    assert ModelStore.from_params(push_params).rollback(infra_check=validate_served_copy).served == 2
    assert ModelStore.from_params(push_params).rollback(infra_check=validate_served_copy).served == 1
    with pytest.raises(PetsegError, match="version 1 is the first served version still kept"):
        ModelStore.from_params(push_params).rollback(infra_check=validate_served_copy)
    with pytest.raises(PetsegError, match=r"version 9 is not under .*\(kept: 1, 2, 3\)"):
        ModelStore.from_params(push_params).rollback(9, infra_check=validate_served_copy)
    assert dict(served_config(push_params).version_labels) == {}
    assert list(served_config(push_params).model_version_policy.specific.versions) == [1]

    params_file = write_params(tmp_path, push_params)
    assert main(["rollback", "--to", "2", "--params", params_file]) == 0
    assert "now serves version 2 (was 1)" in capsys.readouterr().out
    infos = ModelStore.from_params(push_params).list_versions()
    assert [(i.version, i.served) for i in infos] == [(3, False), (2, True), (1, False)]
    assert infos[1].lineage["git_commit"] == "1" * 40 and infos[1].lineage["metrics"]["mean_iou"] == pytest.approx(0.8)
    assert main(["rollback", "--list", "--params", params_file]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["3", "2", "1"] and [("*" in r) for r in rows] == [False, True, False]
    assert rows[1][3] == "11111111" and rows[1][4] == "0.8000"
    assert rows[1][-1] == os.path.join(
        ModelStore.from_params(push_params).version_path(2), "model_card", "model_card.html"
    )

    # the next push takes a new number (never reuses one) and is served
    pushed = push_blessed(rule_savedmodels["wrong_70"], push_params, tmp_path)
    assert pushed.version == 4 and ModelStore.from_params(push_params).served_version() == 4
    assert versions_on_disk(push_params) == ["2", "3", "4"]


def test_a_plain_rollback_returns_to_the_version_served_before_from_the_stores_history(
    rule_savedmodels, tmp_path, push_params, capsys
):
    """push v1..v4, rollback --to 3, push v5: a plain rollback serves 3 (served before 5), not 4 (the newest older)."""
    for name in ("perfect", "wrong_10", "wrong_30", "wrong_70"):
        push_blessed(rule_savedmodels[name], push_params, tmp_path)
    params_file = write_params(tmp_path, push_params)
    assert main(["rollback", "--to", "3", "--params", params_file]) == 0
    assert push_blessed(rule_savedmodels["perfect"], push_params, tmp_path).version == 5
    store = ModelStore.from_params(push_params)
    assert store.version_numbers() == [3, 4, 5]  # keep_versions 3

    assert main(["rollback", "--list", "--params", params_file]) == 0
    rows = {r[0]: r[1] for r in (line.split() for line in capsys.readouterr().out.splitlines()[1:])}
    assert rows["5"] == "*" and rows["3"] == "prev" and rows["4"] not in ("*", "prev")

    assert main(["rollback", "--params", params_file]) == 0
    assert "now serves version 3 (was 5)" in capsys.readouterr().out
    assert store.served_version() == 3
    history = [(e["version"], e["by"]) for e in store.read_record()["history"]]
    assert history == [(1, "push"), (2, "push"), (3, "push"), (4, "push"), (3, "rollback")]
    # before 3 was served (by rollback --to), 4 was: the next plain rollback goes there, then nothing is left
    assert store.rollback(infra_check=validate_served_copy).served == 4
    assert store.rollback(infra_check=validate_served_copy).served == 3
    with pytest.raises(PetsegError, match="version 3 is the first served version still kept"):
        store.rollback(infra_check=validate_served_copy)


# ------------------------------------------------------------ object-store URIs
def test_a_uri_base_path_works_through_gfile(rule_savedmodels, coded_records, tmp_path):
    """TF's in-memory ram:// file system stands in for gs:// or s3://: every access goes through tf.io.gfile.

    ram:// matches folder names by bare prefix (it lists `assets.extra/x` under `assets` too),
    which real object stores do not; the models' empty `assets/` folder is left out to avoid that.
    """
    models = {}
    for name in ("perfect", "wrong_10"):
        models[name] = shutil.copytree(rule_savedmodels[name], tmp_path / name)
        shutil.rmtree(models[name] / "assets")
    params = PushParams(model_base_path=f"ram://serving-{uuid.uuid4().hex[:8]}", keep_versions=1, warmup_requests=2)
    assert push_blessed(models["perfect"], params, tmp_path).version == 1
    result = evaluate(
        models["wrong_10"],
        coded_records,
        EvaluateParams(min_mean_iou=0.5, min_accuracy=0.5, max_regression=0.5),
        params,
        tmp_path / "ev",
    )
    assert result.blessed and result.baseline_version == 1 and result.baseline_mean_iou == pytest.approx(1.0)
    assert push(models["wrong_10"], tmp_path / "ev", params, Lineage()).version == 2
    assert sorted(tf.io.gfile.listdir(ModelStore.from_params(params).root)) == [
        model_store.CLAIMS_DIR,
        model_store.RECORD_FILE,
        "2",
    ]
    with tf.io.gfile.GFile(f"{params.model_base_path}/models.config") as fh:
        assert f'base_path: "{params.model_base_path}/petseg"' in fh.read()
    assert [(i.version, i.served, i.lineage["version"]) for i in ModelStore.from_params(params).list_versions()] == [
        (2, True, 2)
    ]
