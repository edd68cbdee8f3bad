"""Object-store credentials reach the pods that touch the store, and only those (issue 27).

- params: pipeline.object_store is validated at load (Secret names, Secret keys, endpoint URL).
- the compiled IR: the store steps (drift_reference, validate, evaluate, push) take both keys from
  the Secret and have the endpoint; no other executor has any of it.
- the check each store step runs first: a missing, unknown or mismatched key ends in one line
  naming the variable and the Secret key it comes from (against moto_server with signatures on).
- the contract end to end: the env the IR declares for push and evaluate, filled from a
  Secret-shaped dict, is all their executors (the IR's own command) get, and they reach the bucket.
- KServe: the ServiceAccount and Secret `petseg pipeline kserve-credentials` writes, and the shipped one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helpers import MOTO_SERVER, REPO_ROOT, moto_server, require_signed_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petseg.cli import main
from petseg.components.contracts import object_store as contract
from petseg.components.contracts.serving_runtime import TF_SERVING_VERSION
from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.params import PushParams, load_params, params_to_dict, with_overrides
from petseg.components.store.credentials import require_store_access
from petseg.components.store.model_store import ModelStore
from petseg.pipeline.component_io import push_target_settings
from petseg.pipeline.pipeline import SERVING_STORE_STEPS, STEPS, compile_pipeline

PARAMS = load_params(REPO_ROOT / "params.yaml")
SECRET = "mlpipeline-minio-artifact"
ENDPOINT = "http://minio-service.kubeflow:9000"
STORE_EXECUTORS = {f"exec-{step.replace('_', '-')}" for step in SERVING_STORE_STEPS}

needs_moto = pytest.mark.skipif(not os.path.exists(MOTO_SERVER), reason="moto_server not installed")


def _store_params(base: str = "s3://petseg-models/serving", **extra):
    return with_overrides(
        PARAMS,
        {
            "push.model_base_path": base,
            "pipeline.object_store.secret": SECRET,
            "pipeline.object_store.endpoint": ENDPOINT,
            **extra,
        },
    )


# ------------------------------------------------------------------ params
def test_defaults_are_the_pods_identity_and_kubeflows_key_names():
    store = PARAMS.pipeline.object_store
    assert (store.secret, store.endpoint, store.gcs_secret) == ("", "", "")
    assert (store.keys.access_key_id, store.keys.secret_access_key) == ("accesskey", "secretkey")
    assert contract.store_env(store).empty


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("pipeline.object_store.secret", "MLPipeline", "(a Secret name)"),
        ("pipeline.object_store.secret", "-minio", "(a Secret name)"),
        ("pipeline.object_store.secret", "a" * 254, "(a Secret name)"),
        ("pipeline.object_store.gcs_secret", "gcs key", "(a Secret name)"),
        ("pipeline.object_store.kserve_secret", "", "must name a Secret"),
        ("pipeline.object_store.keys.access_key_id", "access/key", "key of a Kubernetes Secret"),
        ("pipeline.object_store.keys.secret_access_key", "..secret", "key of a Kubernetes Secret"),
        ("pipeline.object_store.keys.secret_access_key", "accesskey", "name the same key"),
        ("pipeline.object_store.gcs_key", "", "key of a Kubernetes Secret"),
        ("pipeline.object_store.endpoint", "minio-service.kubeflow:9000", "http:// or https://"),
        ("pipeline.object_store.endpoint", "ftp://minio:21", "http:// or https://"),
        ("pipeline.object_store.endpoint", "http://user:pw@minio:9000", "credentials do not belong"),
        ("pipeline.object_store.endpoint", "http://minio:9000/bucket", "no path"),
        ("pipeline.object_store.endpoint", "http://minio:99999", "not an S3 endpoint URL"),
        ("pipeline.object_store.region", "US East", "region name"),
        ("pipeline.object_store.secret", 3, "must be a string"),
    ],
)
def test_a_bad_setting_is_refused_at_load_naming_its_key(key, value, words):
    with pytest.raises(ParamsError) as caught:
        with_overrides(PARAMS, {key: value})
    message = str(caught.value)
    assert key.rsplit(".", 1)[-1] in message and words in message and "\n" not in message


def test_one_secret_cannot_hold_both_s3_keys_and_the_gcs_key_file():
    with pytest.raises(ParamsError, match="name the same Secret"):
        with_overrides(PARAMS, {"pipeline.object_store.secret": "s", "pipeline.object_store.gcs_secret": "s"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80) | st.from_regex(r"https?://[a-z0-9.-]{1,20}(:[0-9]{1,6})?/?", fullmatch=True))
def test_any_endpoint_is_refused_in_one_line_or_gives_kserve_a_bare_host(text):
    try:
        params = with_overrides(PARAMS, {"pipeline.object_store.endpoint": text})
    except ParamsError as exc:
        assert "pipeline.object_store.endpoint" in str(exc) and "\n" not in str(exc)
        return
    if not text:
        return
    host, https = contract.endpoint_host(params.pipeline.object_store.endpoint)
    assert host and "/" not in host and not any(c.isspace() for c in host)
    assert https == text.startswith("https://")
    assert contract.store_env(params.pipeline.object_store).values[contract.ENDPOINT_ENV] == text.rstrip("/")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_secret_name_is_refused_in_one_line_or_is_a_dns_subdomain(text):
    try:
        with_overrides(PARAMS, {"pipeline.object_store.secret": text})
    except ParamsError as exc:
        assert "pipeline.object_store.secret" in str(exc) and "\n" not in str(exc)
        return
    labels = text.split(".") if text else []
    assert len(text) <= 253
    for label in labels:
        assert label and label[0].isalnum() and label[-1].isalnum() and label == label.lower()
        assert set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


# ------------------------------------------------------------------ the compiled IR
def _compile(tmp_path: Path, params) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(compile_pipeline(params, tmp_path / "pipeline.yaml").read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return docs[0], platform


def _plain_env(spec: dict, executor: str) -> dict[str, str]:
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    return {item["name"]: item["value"] for item in container.get("env", [])}


def declared_env(spec: dict, platform: dict, executor: str, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the IR gives `executor`'s container, Secret keys filled from `secrets` as the kubelet does.

    A key the Secret lacks is left out (the kubelet would not start the pod; an empty value it would).
    """
    env = _plain_env(spec, executor)
    for item in platform.get(executor, {}).get("secretAsEnv", []):
        data = secrets.get(item["secretName"], {})
        for mapping in item["keyToEnv"]:
            if mapping["secretKey"] in data:
                env[mapping["envVar"]] = data[mapping["secretKey"]]
    return env


def test_each_store_step_takes_both_keys_from_the_secret_and_the_endpoint_and_no_other_step_does(tmp_path):
    spec, platform = _compile(tmp_path, _store_params(**{"pipeline.deploy": "kserve"}))
    executors = set(spec["deploymentSpec"]["executors"])
    assert executors > STORE_EXECUTORS and "exec-deploy-kserve" in executors
    assert {e.removeprefix("exec-").replace("-", "_") for e in executors} >= set(STEPS)
    for executor in sorted(executors):
        secret_env = platform.get(executor, {}).get("secretAsEnv", [])
        env = _plain_env(spec, executor)
        if executor in STORE_EXECUTORS:
            (item,) = secret_env
            assert item["secretName"] == SECRET and not item["optional"]
            assert {m["envVar"]: m["secretKey"] for m in item["keyToEnv"]} == {
                "AWS_ACCESS_KEY_ID": "accesskey",
                "AWS_SECRET_ACCESS_KEY": "secretkey",
            }
            assert env[contract.ENDPOINT_ENV] == ENDPOINT
            assert json.loads(env[contract.SOURCES_ENV])["AWS_SECRET_ACCESS_KEY"] == {
                "secret": SECRET,
                "key": "secretkey",
            }
        else:
            assert secret_env == [], executor
            assert not {name for name in env if name.startswith(("AWS_", "PETSEG_STORE"))}, executor


def test_without_a_secret_no_step_gets_credentials_as_before(tmp_path):
    spec, platform = _compile(tmp_path, with_overrides(PARAMS, {"push.model_base_path": "s3://b/m"}))
    for executor in spec["deploymentSpec"]["executors"]:
        assert "secretAsEnv" not in platform.get(executor, {}) and "secretAsVolume" not in platform.get(executor, {})
        assert not {n for n in _plain_env(spec, executor) if n.startswith(("AWS_", "GOOGLE_", "PETSEG_STORE"))}


def test_region_and_a_gcs_key_file_reach_the_store_steps_only(tmp_path):
    params = with_overrides(
        PARAMS,
        {
            "push.model_base_path": "gs://petseg-models/serving",
            "pipeline.object_store.gcs_secret": "petseg-gcs-key",
            "pipeline.object_store.region": "eu-west-1",
        },
    )
    spec, platform = _compile(tmp_path, params)
    for executor in spec["deploymentSpec"]["executors"]:
        env, volumes = _plain_env(spec, executor), platform.get(executor, {}).get("secretAsVolume", [])
        if executor in STORE_EXECUTORS:
            assert [(v["secretName"], v["mountPath"]) for v in volumes] == [("petseg-gcs-key", contract.GCS_MOUNT_PATH)]
            assert (
                env["GOOGLE_APPLICATION_CREDENTIALS"]
                == f"{contract.GCS_MOUNT_PATH}/gcloud-application-credentials.json"
            )
            assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1"
        else:
            assert volumes == [] and "GOOGLE_APPLICATION_CREDENTIALS" not in env and "AWS_REGION" not in env


# ------------------------------------------------------------------ the check, in process
@pytest.fixture(scope="module")
def signed_s3(tmp_path_factory):
    """(endpoint, admin key id, admin secret, bucket) of a moto server that checks keys and signatures."""
    if not os.path.exists(MOTO_SERVER):
        pytest.skip("moto_server not installed")
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        import boto3

        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        ).create_bucket(Bucket="petseg-models")
        key_id, secret = require_signed_requests(endpoint, "petseg-models")
        yield endpoint, key_id, secret, "petseg-models"


def _use_env(monkeypatch, tmp_path, env: dict[str, str]) -> None:
    """Only `env` (and no ~/.aws, no instance metadata) for S3 in this process; s3fs forgets earlier clients."""
    import s3fs

    for name in list(os.environ):
        if name.startswith(("AWS_", "PETSEG_STORE", "GOOGLE_APPLICATION", "FSSPEC_S3")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()


def _pipeline_env(endpoint: str, key_id: str | None, secret: str | None) -> dict[str, str]:
    """What the pipeline's pod env would be for these Secret values (from the contract, not the IR)."""
    store = _store_params(**{"pipeline.object_store.endpoint": endpoint}).pipeline.object_store
    env = dict(contract.store_env(store).values)
    for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret)):
        if value is not None:
            env[name] = value
    return env


def _refusal(path: str) -> str:
    with pytest.raises(PetsegError) as caught:
        require_store_access(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_keys_from_the_secret_pass(signed_s3, monkeypatch, tmp_path):
    endpoint, key_id, secret, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, key_id, secret))
    require_store_access(f"s3://{bucket}/serving")
    require_store_access("serving/models")  # a local path needs nothing


@pytest.mark.parametrize(
    "key_id, secret, expected",
    [
        (
            "AKIAUNKNOWNUNKNOWN00",
            None,
            r"^s3://petseg-models: the store does not know this access key id \(InvalidAccessKeyId\); .*"
            r"; here AWS_ACCESS_KEY_ID comes from Secret mlpipeline-minio-artifact key accesskey$",
        ),
        (
            None,
            "not-the-secret",
            r"^s3://petseg-models: the secret key does not match the access key id \(SignatureDoesNotMatch\); .*"
            r"; here AWS_SECRET_ACCESS_KEY comes from Secret mlpipeline-minio-artifact key secretkey$",
        ),
        (
            None,
            "",
            r"^AWS_SECRET_ACCESS_KEY is empty or not set; it comes from Secret mlpipeline-minio-artifact "
            r"key secretkey",
        ),
        (
            "",
            None,
            r"^AWS_ACCESS_KEY_ID is empty or not set; it comes from Secret mlpipeline-minio-artifact key accesskey",
        ),
    ],
)
def test_a_wrong_or_empty_key_fails_in_one_line_naming_the_variable_and_its_secret(
    signed_s3, monkeypatch, tmp_path, key_id, secret, expected
):
    import re

    endpoint, good_id, good_secret, bucket = signed_s3
    env = _pipeline_env(endpoint, good_id if key_id is None else key_id, good_secret if secret is None else secret)
    _use_env(monkeypatch, tmp_path, env)
    assert re.search(expected, _refusal(f"s3://{bucket}/serving"))


def test_without_the_pipeline_the_message_says_the_environment(signed_s3, monkeypatch, tmp_path):
    endpoint, key_id, _, bucket = signed_s3
    env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "wrong"}
    _use_env(monkeypatch, tmp_path, env)
    message = _refusal(f"s3://{bucket}/serving")
    assert message.startswith("s3://petseg-models: the secret key does not match the access key id")
    assert "Secret" not in message and "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


def test_no_credentials_half_credentials_a_missing_bucket_and_a_key_without_rights(signed_s3, monkeypatch, tmp_path):
    import boto3

    endpoint, key_id, secret, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, {"AWS_ENDPOINT_URL_S3": endpoint})
    assert _refusal(f"s3://{bucket}/m").startswith("s3://petseg-models: no credentials for the store were found")
    _use_env(monkeypatch, tmp_path, {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": key_id})
    assert (
        _refusal(f"s3://{bucket}/m")
        == "AWS_SECRET_ACCESS_KEY is not set but AWS_ACCESS_KEY_ID is: set both, or neither to use the pod's identity"
    )
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, key_id, secret))
    assert _refusal("s3://no-such-bucket/m").startswith("s3://no-such-bucket: the bucket does not exist")

    iam = boto3.client(
        "iam", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1"
    )
    user = f"nobody-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    weak = iam.create_access_key(UserName=user)["AccessKey"]
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, weak["AccessKeyId"], weak["SecretAccessKey"]))
    message = _refusal(f"s3://{bucket}/m")
    assert message.startswith("s3://petseg-models: access denied (AccessDenied)") and "s3:ListBucket" in message
    assert message.endswith("; here AWS_ACCESS_KEY_ID comes from Secret mlpipeline-minio-artifact key accesskey")


def test_an_unreachable_endpoint_is_named(monkeypatch, tmp_path):
    from petseg.components.ml.cluster import free_ports

    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    _use_env(monkeypatch, tmp_path, {**_pipeline_env(closed, "k", "s"), "AWS_MAX_ATTEMPTS": "1"})
    message = _refusal("s3://bucket/m")
    assert message.startswith(f"s3://bucket: cannot reach the store at {closed}")


def test_gcs_key_file_is_checked_and_named(monkeypatch, tmp_path):
    store = with_overrides(PARAMS, {"pipeline.object_store.gcs_secret": "gkey"}).pipeline.object_store
    values = contract.store_env(store).values
    _use_env(monkeypatch, tmp_path, {contract.SOURCES_ENV: values[contract.SOURCES_ENV]})
    assert _refusal("gs://b/m") == (
        "GOOGLE_APPLICATION_CREDENTIALS is empty or not set; it should name the key file from Secret gkey key "
        "gcloud-application-credentials.json"
    )
    key = tmp_path / "key.json"
    for content, problem in ((None, "does not exist"), ("{", "is not JSON"), ("[]", 'no "type"')):
        if content is not None:
            key.write_text(content)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        message = _refusal("gs://b/m")
        assert problem in message and "from Secret gkey key gcloud-application-credentials.json" in message
    key.write_text(json.dumps({"type": "service_account"}))
    require_store_access("gs://b/m")


def test_a_garbled_sources_variable_is_one_line(monkeypatch, tmp_path):
    _use_env(monkeypatch, tmp_path, {contract.SOURCES_ENV: "{not json"})
    assert _refusal("s3://b/m").startswith("PETSEG_STORE_CREDENTIALS is not JSON")


def test_the_steps_check_first(signed_s3, monkeypatch, tmp_path):
    """drift_reference, validate (a store reference), evaluate and push refuse a wrong key before anything else."""
    from petseg.components.drift_reference import drift_reference
    from petseg.components.evaluate import evaluate
    from petseg.components.push import push
    from petseg.components.validate import validate_dataset

    endpoint, key_id, _, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, key_id, "wrong"))
    store = PushParams(model_base_path=f"s3://{bucket}/serving")
    expected = "the secret key does not match the access key id"
    with pytest.raises(PetsegError, match=expected):
        drift_reference("served", ModelStore.from_params(store))
    with pytest.raises(PetsegError, match=expected):
        validate_dataset(tmp_path / "raw", PARAMS.validate, tmp_path / "v", reference=f"s3://{bucket}/serving/ref")
    with pytest.raises(PetsegError, match=expected):
        evaluate(tmp_path / "model", tmp_path / "records", PARAMS.evaluate, store, tmp_path / "ev")
    blessing = tmp_path / "blessing.json"
    blessing.write_text(json.dumps({"blessed": True, "reason": "x", "model": {}, "push_target": "s3://x"}))
    with pytest.raises(PetsegError, match=expected):
        push(tmp_path / "model", blessing, store, {})
    assert not (tmp_path / "v").exists() and not (tmp_path / "ev").exists()


# ------------------------------------------------------------------ the contract, end to end
def _executor_input(spec: dict, component: str, arguments: dict, task_root: Path) -> str:
    """KFP's executor input for `component` of the IR with these arguments (artifacts: local folders)."""
    from google.protobuf import json_format
    from kfp.local import executor_input_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    component_spec = json_format.ParseDict(spec["components"][component], pipeline_spec_pb2.ComponentSpec())
    executor_input = executor_input_utils.construct_executor_input(component_spec, arguments, str(task_root), False)
    return json_format.MessageToJson(executor_input)


def _run_executor(spec: dict, executor: str, env: dict[str, str], executor_input: str, cwd: Path):
    """The IR's own container command for `executor`, in a subprocess whose whole environment is `env`."""
    container = spec["deploymentSpec"]["executors"][executor]["container"]
    args = [executor_input if arg == "{{$}}" else arg for arg in container["args"]]
    return subprocess.run([*container["command"], *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _artifact(cls, path: Path):
    artifact = cls(uri=str(path))
    artifact.metadata = {}
    return artifact


def _accepted_validation(folder: Path) -> Path:
    import pandas as pd

    from petseg.components.core.expectations import DRIFT_CHECKS

    folder.mkdir(parents=True)
    columns = sorted({c for names, _ in DRIFT_CHECKS.values() for c in names})
    pd.DataFrame({c: [1.0, 2.0] for c in columns}).to_csv(folder / "examples.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"success": True, "fingerprint": "a" * 64}))
    return folder


@pytest.mark.slow
@needs_moto
def test_push_and_evaluate_reach_a_signed_store_with_only_the_env_the_ir_declares(
    tmp_path, rule_savedmodels, coded_records, monkeypatch
):
    from kfp.dsl import Artifact, Dataset, Model
    from test_s3 import publish_by_copy

    with moto_server(tmp_path / "moto.log") as endpoint:
        import boto3

        bucket = f"petseg-{uuid.uuid4().hex[:8]}"
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        ).create_bucket(Bucket=bucket)
        key_id, secret = require_signed_requests(endpoint, bucket)
        params = _store_params(f"s3://{bucket}/serving", **{"pipeline.object_store.endpoint": endpoint})
        push_params = params.push
        # Version 1 is served already (written here with the admin key): evaluate must read it as its baseline.
        _use_env(
            monkeypatch,
            tmp_path,
            {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
        )
        publish_by_copy(rule_savedmodels["wrong_10"], push_params, 1, {})

        spec, platform = _compile(tmp_path, params)
        the_secret = {SECRET: {"accesskey": key_id, "secretkey": secret}}
        basics = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path / "home")}
        (tmp_path / "home").mkdir()
        sections = {
            name: params_to_dict(getattr(params, name))
            for name in ("data", "validate", "preprocess", "model", "train", "evaluate", "push", "card")
        }

        def run(executor, component, arguments, secrets=the_secret):
            env = {**declared_env(spec, platform, executor, secrets), **basics}
            assert set(env) - set(basics) == {
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ENDPOINT_URL_S3",
                "PETSEG_STORE_CREDENTIALS",
            } - ({"AWS_SECRET_ACCESS_KEY"} if "secretkey" not in secrets[SECRET] else set())
            task_root = tmp_path / f"{component}-{uuid.uuid4().hex[:6]}"
            executor_input = _executor_input(spec, component, arguments, task_root)
            return _run_executor(spec, executor, env, executor_input, tmp_path), task_root

        evaluate_args = {
            "trained_model": _artifact(Model, rule_savedmodels["perfect"]),
            "records": _artifact(Dataset, coded_records),
            "evaluate": sections["evaluate"],
            "push": sections["push"],
        }
        done, evaluate_root = run("exec-evaluate", "comp-evaluate", evaluate_args)
        assert done.returncode == 0, done.stderr[-3000:]
        (blessing_file,) = evaluate_root.rglob("blessing.json")
        blessing = json.loads(blessing_file.read_text())
        assert blessing["blessed"] and blessing["baseline"]["version"] == 1  # read from the signed bucket

        push_args = {
            "trained_model": _artifact(Model, rule_savedmodels["perfect"]),
            "evaluation": _artifact(Artifact, blessing_file.parent),
            "validation": _artifact(Artifact, _accepted_validation(tmp_path / "validation")),
            "training_metrics": _artifact(Artifact, tmp_path / "no-training-metrics"),
            "training_log": _artifact(Artifact, tmp_path / "no-training-log"),
            **sections,
            "push_target": push_target_settings(params, on_cluster=True),
            "code": {"commit": "c" * 40, "images": {}},
            "serving_release": TF_SERVING_VERSION,
            "run_name": "contract-run",
            "run_id": "contract-id",
        }
        done, _ = run("exec-push", "comp-push", push_args)
        assert done.returncode == 0, done.stderr[-3000:]
        s3fs_env_check = ModelStore.from_params(push_params).version_numbers()  # with the admin key, in this process
        assert s3fs_env_check == [1, 2] and ModelStore.from_params(push_params).served_version() == 2

        # The same executors, the Secret's secret key wrong or its key empty: one line naming it, nothing written.
        wrong = {SECRET: {"accesskey": key_id, "secretkey": "not-the-secret"}}
        done, _ = run("exec-push", "comp-push", push_args, wrong)
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]
        assert "the secret key does not match the access key id (SignatureDoesNotMatch)" in last
        assert "from Secret mlpipeline-minio-artifact key secretkey" in last
        done, _ = run("exec-evaluate", "comp-evaluate", evaluate_args, {SECRET: {"accesskey": key_id}})
        assert done.returncode != 0
        assert (
            done.stderr.strip()
            .splitlines()[-1]
            .endswith(
                "AWS_SECRET_ACCESS_KEY is empty or not set; it comes from Secret mlpipeline-minio-artifact key "
                "secretkey: put the store's secret access key under that key"
            )
        )
        assert ModelStore.from_params(push_params).version_numbers() == [1, 2]


def test_the_cli_says_a_refused_key_in_one_line(signed_s3, monkeypatch, tmp_path, capsys):
    endpoint, key_id, _, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, key_id, "wrong"))
    params_file = tmp_path / "params.yaml"
    raw = params_to_dict(PARAMS)
    raw["push"]["model_base_path"] = f"s3://{bucket}/serving"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "evaluation"
    code = main(["evaluate", "--params", str(params_file), "--model", str(tmp_path / "m"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and not out.exists()
    assert err.startswith("petseg evaluate: error: s3://petseg-models: the secret key does not match the access key id")
    assert "from Secret mlpipeline-minio-artifact key secretkey" in err


# ------------------------------------------------------------------ KServe
def _cli_yaml(capsys, *args: str) -> list[dict]:
    assert main(["pipeline", "kserve-credentials", "--params", str(REPO_ROOT / "params.yaml"), *args]) == 0
    return [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]


def test_shipped_kserve_service_account_is_what_params_yaml_generates(capsys):
    shipped = yaml.safe_load((REPO_ROOT / "serving" / "deploy" / "kserve" / "serviceaccount.yaml").read_text())
    assert _cli_yaml(capsys) == [shipped]
    assert "secrets" not in shipped  # pvc:// storageUri: KServe would fail the pod on a listed Secret that is missing


def test_kserve_gets_an_annotated_secret_from_the_same_settings(capsys, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio123")
    account, secret = _cli_yaml(
        capsys,
        "--param",
        f"pipeline.object_store.secret={SECRET}",
        "--param",
        f"pipeline.object_store.endpoint={ENDPOINT}",
        "--param",
        "pipeline.object_store.region=us-east-1",
    )
    for obj in (account, secret):
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    assert account["metadata"]["name"] == PARAMS.pipeline.kserve.service_account
    assert account["secrets"] == [{"name": "petseg-kserve-s3"}]
    assert secret["metadata"]["namespace"] == account["metadata"]["namespace"] == PARAMS.pipeline.kserve.namespace
    # The annotations and data keys KServe v0.20.0's storage initializer reads (see contract's constants).
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1",
    }
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "minio", "AWS_SECRET_ACCESS_KEY": "minio123"}


def test_kserve_credentials_need_the_keys_and_kserves_gcs_file_name(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    args = ["pipeline", "kserve-credentials", "--params", str(REPO_ROOT / "params.yaml")]
    assert main([*args, "--param", f"pipeline.object_store.secret={SECRET}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set" in err and SECRET in err
    assert (
        main(
            [*args, "--param", "pipeline.object_store.gcs_secret=g", "--param", "pipeline.object_store.gcs_key=k.json"]
        )
        == 1
    )
    assert "reads the key file from key gcloud-application-credentials.json" in capsys.readouterr().err
    assert main([*args, "--param", "pipeline.object_store.gcs_secret=g"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["secrets"] == [{"name": "g"}]


# ------------------------------------------------------------------ TF Serving: the mirror and its deploy files
DEPLOY = REPO_ROOT / "serving" / "deploy"
S3_COMPONENT = DEPLOY / "components" / "s3-models"


def test_mirror_copies_versions_before_the_config_and_follows_the_store(
    signed_s3, monkeypatch, tmp_path, rule_savedmodels
):
    from test_s3 import publish_by_copy

    from petseg.components.store import storage
    from petseg.components.store.mirror import mirror_once

    endpoint, key_id, secret, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, _pipeline_env(endpoint, key_id, secret))
    store = PushParams(model_base_path=f"s3://{bucket}/mirror-{uuid.uuid4().hex[:6]}", server_model_base_path="/models")
    target = tmp_path / "models"
    assert mirror_once(store.model_base_path, target, "petseg").changed is False  # nothing pushed yet
    assert not (target / "models.config").exists()

    publish_by_copy(rule_savedmodels["wrong_10"], store, 1, {})
    publish_by_copy(rule_savedmodels["perfect"], store, 2, {})
    first = mirror_once(store.model_base_path, target, "petseg")
    assert (first.added, first.removed, first.config_changed) == ([1, 2], [], True)
    for version, name in ((1, "wrong_10"), (2, "perfect")):
        copied = target / "petseg" / str(version) / "saved_model.pb"
        assert copied.read_bytes() == (rule_savedmodels[name] / "saved_model.pb").read_bytes()
    config = (target / "models.config").read_text()
    assert 'base_path: "/models/petseg"' in config and "versions: 2" in config
    assert not mirror_once(store.model_base_path, target, "petseg").changed  # in step: nothing to do

    ModelStore.from_params(store).serve_version(1, log=lambda _: None)  # a rollback on the store
    storage.remove_tree(ModelStore.from_params(store).version_path(2))
    second = mirror_once(store.model_base_path, target, "petseg")
    assert (second.added, second.removed, second.config_changed) == ([], [2], True)
    assert sorted(p.name for p in (target / "petseg").iterdir()) == ["1"]


def test_mirror_cli_refuses_a_wrong_key_in_one_line_naming_the_secret(signed_s3, monkeypatch, tmp_path, capsys):
    endpoint, key_id, _, bucket = signed_s3
    _use_env(monkeypatch, tmp_path, {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": "wrong"})
    raw = yaml.safe_load((S3_COMPONENT / "params.yaml").read_text())
    raw["push"]["model_base_path"] = f"s3://{bucket}/serving"
    raw["pipeline"]["object_store"]["endpoint"] = endpoint  # the endpoint comes from the params file
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = main(["mirror", "--params", str(tmp_path / "params.yaml"), "--to", str(tmp_path / "m"), "--once"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("petseg mirror: error: s3://petseg-models: the secret key does not match the access key id")
    # reached the endpoint the params file names (an unreachable one is another line), and names the Secret
    assert err.rstrip().endswith("here AWS_SECRET_ACCESS_KEY comes from Secret mlpipeline-minio-artifact key secretkey")
    assert main(["mirror", "--params", str(tmp_path / "params.yaml"), "--to", str(tmp_path), "--every", "0"]) == 1
    assert "--every must be a positive number" in capsys.readouterr().err


def _render_with_s3_component(tmp_path: Path) -> list[dict]:
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: cannot render the kustomization")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, overlay)],
                "components": [os.path.relpath(S3_COMPONENT, overlay)],
            }
        )
    )
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_s3_component_feeds_tf_serving_from_the_bucket_with_keys_from_the_secret(tmp_path):
    objects = _render_with_s3_component(tmp_path)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.37.0", strict=True)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("PersistentVolumeClaim", "petseg-models") not in kinds
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"] and "persistentVolumeClaim" not in volumes["models"]
    (mirror,) = pod["initContainers"]
    assert mirror["restartPolicy"] == "Always" and mirror["command"][:2] == ["petseg", "mirror"]
    (tfserving,) = pod["containers"]
    assert {m["mountPath"] for m in mirror["volumeMounts"] if m["name"] == "models"} == {"/models"}
    assert {m["mountPath"] for m in tfserving["volumeMounts"] if m["name"] == "models"} == {"/models"}

    # The keys: secretKeyRef exactly as the pipeline's store steps get them for the component's params.
    settings = load_params(S3_COMPONENT / "params.yaml")
    expected = {
        name: {"name": ref.secret, "key": ref.key}
        for name, ref in contract.store_env(settings.pipeline.object_store).from_secrets.items()
    }
    assert {e["name"]: e["valueFrom"]["secretKeyRef"] for e in mirror["env"]} == expected
    # The endpoint and bucket: the component's params.yaml, mounted where the mirror reads it.
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "petseg-serving-mirror"
    ]
    assert config_map["data"]["params.yaml"] == (S3_COMPONENT / "params.yaml").read_text()
    assert volumes["mirror-params"]["configMap"]["name"] == "petseg-serving-mirror"
    assert settings.pipeline.object_store.endpoint.startswith("http://minio-service.kubeflow")
    assert settings.push.model_base_path.startswith("s3://")
    assert settings.push.model_name == PARAMS.push.model_name
    assert settings.push.server_model_base_path == "/models"


@pytest.mark.slow
def test_checkov_passes_the_s3_variant(tmp_path):
    from test_deploy_tools import _assert_clean, _checkov

    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(_render_with_s3_component(tmp_path)))
    _assert_clean(_checkov("--file", str(manifest), "--framework", "kubernetes"), {"kubernetes"})


def test_compose_s3_override_mirrors_into_the_volume_tf_serving_reads():
    base = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    override = yaml.safe_load((DEPLOY / "docker-compose.s3.yaml").read_text())
    mirror, tfserving = override["services"]["model-mirror"], override["services"]["tfserving"]
    assert mirror["env_file"] == ["s3.env"] and mirror["command"][:2] == ["petseg", "mirror"]
    params_mount = next(v for v in mirror["volumes"] if v.endswith(":/etc/petseg/params.yaml:ro"))
    assert (DEPLOY / params_mount.split(":")[0]).resolve() == S3_COMPONENT / "params.yaml"
    # Compose merges a service's volumes by target: /models becomes the mirror's volume.
    base_targets = {v.split(":")[1] for v in base["services"]["tfserving"]["volumes"]}
    assert "/models" in base_targets and tfserving["volumes"] == ["models:/models:ro"]
    assert "models:/models" in mirror["volumes"]
    assert tfserving["depends_on"] == {"model-mirror": {"condition": "service_healthy"}}
    assert mirror["user"].split(":")[0] == base["services"]["tfserving"]["user"].split(":")[0]
    example = (DEPLOY / "s3.env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in example if line and not line.startswith("#")}
    assert names == {contract.ACCESS_KEY_ENV, contract.SECRET_KEY_ENV, contract.ENDPOINT_ENV}
    assert "/serving/deploy/s3.env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
