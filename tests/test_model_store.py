"""The model store: TF Serving's label rule replayed, retention, rollback validation, the lock, killed pushes.

TF Serving cannot run here (no binary, no container engine), so `TfServingSim`
re-implements the parts of it that decide whether a models.config is accepted
and which version answers, from its source (tensorflow/serving):

- `ServerCore::ReloadConfig` and `ServerCore::UpdateModelVersionLabelMap`
  (tensorflow_serving/model_servers/server_core.cc): `config_` is replaced,
  then the label map is checked against the versions the servable state
  monitor reports AVAILABLE; a refusal returns before
  `AddModelsViaModelConfigList`, so the new version policy is not applied.
- `Server::PollFilesystemAndReloadConfig` (model_servers/server.cc): every poll
  reads the file and calls ReloadConfig again; a refusal is only logged.
- `AvailabilityPreservingPolicy::GetNextAction`
  (tensorflow_serving/core/availability_preserving_policy.cc): unload the lowest
  un-aspired ready version only when no version is aspired, an aspired one is
  ready, or more than one un-aspired one is ready; else load the highest new
  aspired version.
- flags as main.cc defines them (`allow_version_labels_for_unavailable_models`,
  `force_allow_any_version_labels_for_unavailable_models`), read from this
  project's docker-compose.yaml.

The sequence first push -> second push -> rollback -> roll forward runs the
real push and rollback against it (its GetModelStatus answers over real gRPC).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import text_format
from helpers import write_blessing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from petseg.cli import main
from petseg.components.contracts import signatures
from petseg.components.contracts.lineage import Lineage
from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.fsutil import read_json, write_json
from petseg.components.core.params import PushParams, check_model_name, params_from_dict
from petseg.components.push import push
from petseg.components.store import model_store, storage
from petseg.components.store.model_store import ModelStore
from petseg.components.store.warmup import validate_served_copy

REPO_ROOT = Path(__file__).resolve().parents[1]
LOADING, AVAILABLE, END = 20, 30, 50


def deploy_flags() -> dict[str, str]:
    """The tensorflow_model_server flags of serving/deploy/docker-compose.yaml."""
    compose = yaml.safe_load((REPO_ROOT / "serving" / "deploy" / "docker-compose.yaml").read_text())
    (service,) = compose["services"].values()
    return dict(arg[2:].split("=", 1) for arg in service["command"])


class Refused(Exception):
    """ReloadConfig returned an error status."""


class TfServingSim:
    """One tensorflow_model_server following `config_file` (see the module docstring for the sources)."""

    def __init__(self, config_file: str, model_name: str, flags: dict[str, str]):
        self.config_file, self.model_name = config_file, model_name
        self.allow = flags.get("allow_version_labels_for_unavailable_models", "false") == "true"
        self.force = flags.get("force_allow_any_version_labels_for_unavailable_models", "false") == "true"
        self.states: dict[int, int] = {}  # ServableStateMonitor: version -> LOADING/AVAILABLE/END
        self.aspired: set[int] = set()  # what the storage path source last emitted as aspired
        self.label_map: dict[str, int] = {}  # model_labels_to_versions_
        self.refusals: list[str] = []
        self.violations: list[str] = []
        self.lock = threading.RLock()

    # server_core.cc ServerCore::ReloadConfig
    def reload_config(self, text: str) -> None:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        entry = next(e for e in config.model_config_list.config if e.name == self.model_name)
        self._update_model_version_label_map(dict(entry.version_labels))
        # AddModelsViaModelConfigList: the source emits the specific versions found under base_path
        self.aspired = {
            v
            for v in entry.model_version_policy.specific.versions
            if os.path.isfile(os.path.join(entry.base_path, str(v), "saved_model.pb"))
        }

    # server_core.cc ServerCore::UpdateModelVersionLabelMap
    def _update_model_version_label_map(self, labels: dict[str, int]) -> None:
        for label, version in labels.items():
            allow_any = self.force
            if not self.force and self.allow:
                existing = self.label_map.get(label)
                allow_any = not (existing is not None and existing != version)
            if not allow_any and self.states.get(version) != AVAILABLE:
                raise Refused(
                    f"Request to assign label to version {version} of model {self.model_name}, "
                    "which is not currently available for inference"
                )
        self.label_map = dict(labels)

    # availability_preserving_policy.cc AvailabilityPreservingPolicy::GetNextAction, one manager pass
    def tick(self) -> None:
        for version, state in self.states.items():
            if state == LOADING:
                self.states[version] = AVAILABLE
        ready = {v for v, s in self.states.items() if s == AVAILABLE}
        unaspired_ready = sorted(ready - self.aspired)
        if unaspired_ready and (not self.aspired or ready & self.aspired or len(unaspired_ready) > 1):
            self.states[unaspired_ready[0]] = END
            return
        new = [v for v in self.aspired if self.states.get(v, END) == END]
        if new:
            self.states[max(new)] = LOADING

    def start(self) -> None:
        """Start-up: the first config must be accepted (else the server exits), then its models load."""
        with self.lock:
            self.reload_config(Path(self.config_file).read_text())
            for _ in range(10):
                self.tick()
            self._check()

    # server.cc Server::PollFilesystemAndReloadConfig, then one manager pass
    def poll(self) -> None:
        with self.lock:
            try:
                self.reload_config(Path(self.config_file).read_text())
            except Refused as exc:
                self.refusals.append(str(exc))
            self.tick()
            self._check()

    def settle(self) -> None:
        for _ in range(6):
            self.poll()

    def available(self) -> set[int]:
        return {v for v, s in self.states.items() if s == AVAILABLE}

    def answer(self, label: str | None = None) -> int:
        """The version a Predict with this label (or none: the latest) runs on; NOT_FOUND as an exception."""
        with self.lock:
            if label is not None:
                version = self.label_map[label]
                if version not in self.available():
                    raise LookupError(f"label {label} -> version {version} is not loaded")
                return version
            return max(self.available())

    def _check(self) -> None:
        if not self.available():
            self.violations.append(f"no version answers (states {self.states})")
        for label, version in self.label_map.items():
            if self.states.get(version) != AVAILABLE:
                self.violations.append(f"label {label} names version {version}, state {self.states.get(version)}")


class SimModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus answered by the simulated server, which polls its config file first."""

    def __init__(self):
        self.sim: TfServingSim | None = None

    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        if self.sim is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not started")
        self.sim.poll()
        for version, state in sorted(self.sim.states.items()):
            if not request.model_spec.HasField("version") or version == request.model_spec.version.value:
                response.model_version_status.add(version=version, state=state)
        return response


@pytest.fixture
def sim_server():
    service = SimModelService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(0)


def store_params(tmp_path, **kw) -> PushParams:
    defaults = {
        "model_base_path": str(tmp_path / "serving"),
        "model_name": "petseg",
        "keep_versions": 3,
        "warmup_requests": 0,
    }
    return PushParams(**{**defaults, **kw})


def config_text(params) -> str:
    return Path(ModelStore.from_params(params).config_path).read_text()


# --------------------------------------------------------- the label rule replayed
@pytest.mark.parametrize("label", ["stable", ""])
def test_push_push_rollback_rollforward_is_accepted_by_tf_servings_rules(
    label, rule_savedmodels, tmp_path, sim_server, push_version, monkeypatch
):
    service, target = sim_server
    params = store_params(tmp_path, version_label=label, serving_target=target if label else "")
    written: list[str] = []
    real_write = storage.write_text_atomically

    def record_config(path, text):
        real_write(path, text)
        if str(path).endswith(model_store.MODELS_CONFIG_FILE):
            written.append(text)
            if service.sim is not None and len(written) % 2:
                service.sim.poll()  # a server polling often sees some configs between push's steps

    monkeypatch.setattr(storage, "write_text_atomically", record_config)
    flags = deploy_flags()
    served: list[int] = []

    def check(reported: int) -> None:
        service.sim.settle()
        assert service.sim.answer() == reported
        if label:
            assert service.sim.answer(label) == reported
        served.append(reported)

    assert push_version(rule_savedmodels["perfect"], params) == 1
    service.sim = TfServingSim(ModelStore.from_params(params).config_path, "petseg", flags)
    service.sim.start()  # start-up on the first push's config
    check(1)
    assert push_version(rule_savedmodels["wrong_10"], params) == 2
    check(2)
    assert ModelStore.from_params(params).rollback(1, infra_check=validate_served_copy).served == 1
    check(1)
    assert ModelStore.from_params(params).rollback(2, infra_check=validate_served_copy).served == 2
    check(2)

    assert service.sim.refusals == [] and service.sim.violations == []
    assert served == [1, 2, 1, 2]
    assert len(written) == (7 if label else 4)  # with a label: stage + promote per switch
    # every config written would also start a fresh server (a restart at any moment)
    for text in written:
        fresh = TfServingSim(str(tmp_path / "restart.config"), "petseg", flags)
        (tmp_path / "restart.config").write_text(text)
        fresh.start()
        assert fresh.violations == []


def test_the_simulator_refuses_what_tf_serving_refuses(rule_savedmodels, tmp_path, push_version):
    """The old protocol (label and version moved in one write) and labels without the flag are refused."""
    params = store_params(tmp_path)
    push_version(rule_savedmodels["perfect"], params)
    push_version(rule_savedmodels["wrong_10"], params)
    ModelStore.from_params(params).write_serving_config((1,), {"stable": 1})
    sim = TfServingSim(ModelStore.from_params(params).config_path, "petseg", deploy_flags())
    sim.start()
    ModelStore.from_params(params).write_serving_config((2,), {"stable": 2})  # what push used to write
    sim.settle()
    assert sim.refusals[0] == (
        "Request to assign label to version 2 of model petseg, which is not currently available for inference"
    )
    assert sim.answer("stable") == 1 and sim.available() == {1}  # the policy change never applied

    no_flag = TfServingSim(ModelStore.from_params(params).config_path, "petseg", {})
    with pytest.raises(Refused):  # start-up with any label needs the flag: nothing is AVAILABLE yet
        no_flag.start()


def test_moving_a_label_without_a_serving_target_is_refused_at_params_validation():
    with pytest.raises(ParamsError, match=r"'push\.version_label' needs 'push\.serving_target'"):
        params_from_dict({"push": {"version_label": "stable"}})


def test_a_server_that_never_loads_the_new_version_leaves_the_old_config(
    rule_savedmodels, tmp_path, sim_server, push_version
):
    service, target = sim_server
    params = store_params(tmp_path, version_label="stable", serving_target=target, promote_timeout_seconds=1.0)
    push_version(rule_savedmodels["perfect"], params)
    before = config_text(params)
    service.sim = TfServingSim(ModelStore.from_params(params).config_path, "petseg", deploy_flags())
    service.sim.start()
    service.sim.tick = lambda: None  # loads hang forever
    with pytest.raises(
        PetsegError,
        match=r"version 2 was published but is not served: .* did not report version 2 "
        r"AVAILABLE within 1s.*models.config serves version 1 again",
    ):
        _push_second(rule_savedmodels["wrong_10"], params, tmp_path)
    assert config_text(params) == before
    assert ModelStore.from_params(params).served_version() == 1


def _push_second(model_dir, params, tmp_path):
    blessing = tmp_path / "b2.json"
    write_json(
        blessing,
        {
            "blessed": True,
            "reason": "t",
            "baseline": {"version": 1},
            "model": {"fingerprint": model_store.model_fingerprint(model_dir)},
            "push_target": ModelStore.from_params(params).root,
        },
    )
    return push(Path(model_dir), blessing, params, Lineage())


# ------------------------------------------------------------------- params
@pytest.mark.parametrize(
    "key,value,message",
    [
        ("model_name", "../x", "'push.model_name' must be letters"),
        ("model_name", "a/b", "'push.model_name' must be letters"),
        ("model_name", "", "'push.model_name' must be letters"),
        ("model_name", ".hidden", "'push.model_name' must be letters"),
        ("model_base_path", "serving/../../etc", "'push.model_base_path' must not contain '..'"),
        ("model_base_path", "/", "'push.model_base_path' must name a folder"),
        ("model_base_path", "", "'push.model_base_path' must not be empty"),
        ("model_base_path", "gs://bucket/../x", "'push.model_base_path' must not contain '..'"),
        ("model_base_path", "models\nx", "control characters"),
        ("server_model_base_path", "/models/..", "'push.server_model_base_path' must not contain '..'"),
        ("version_label", "1abc", "'push.version_label' must be a letter"),
    ],
)
def test_unsafe_names_and_paths_are_refused_when_params_are_validated(key, value, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict({"push": {key: value}})


def test_safe_names_and_paths_pass():
    params = params_from_dict(
        {
            "push": {
                "model_name": "pet-seg_2.1",
                "model_base_path": "gs://bucket/models",
                "server_model_base_path": "/models",
            }
        }
    )
    assert params.push.model_name == "pet-seg_2.1"


# ---------------------------------------------------------------- retention
def test_retention_deletes_only_what_push_published(rule_savedmodels, tmp_path, push_version):
    params = store_params(tmp_path, keep_versions=1)
    root = Path(ModelStore.from_params(params).root)
    root.mkdir(parents=True)
    shutil.copytree(rule_savedmodels["perfect"], root / "7")  # a version someone placed by hand
    (root / "0099").mkdir()  # an all-digit folder that is no version
    (root / "0099" / "notes.txt").write_text("mine")
    versions = [push_version(rule_savedmodels[name], params) for name in ("perfect", "wrong_10", "wrong_30")]
    assert versions == [100, 101, 102]  # TF Serving reads "0099" as version 99: numbers go past it
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["0099", "102", "7"]
    assert (root / "0099" / "notes.txt").read_text() == "mine"
    assert set(ModelStore.from_params(params).read_record()["published"]) == {102}


def test_retention_keeps_the_version_rolled_back_to(rule_savedmodels, tmp_path, push_version):
    params = store_params(tmp_path, keep_versions=2)
    push_version(rule_savedmodels["perfect"], params)
    push_version(rule_savedmodels["wrong_10"], params)
    assert ModelStore.from_params(params).rollback(1, infra_check=validate_served_copy).served == 1
    assert push_version(rule_savedmodels["wrong_30"], params) == 3
    assert ModelStore.from_params(params).version_numbers() == [1, 2, 3]  # 1 outlives keep_versions: rolled back to
    assert (
        ModelStore.from_params(params).rollback(1, infra_check=validate_served_copy).served == 1
    )  # and can be rolled back to again


# ----------------------------------------------------------------- rollback
def test_rollback_to_a_folder_that_is_not_a_servable_model_changes_nothing(
    rule_savedmodels, tmp_path, push_version, capsys
):
    import tensorflow as tf

    params = store_params(tmp_path)
    push_version(rule_savedmodels["perfect"], params)
    root = Path(ModelStore.from_params(params).root)
    (root / "5").mkdir()
    (root / "5" / "saved_model.pb").write_bytes(b"not a SavedModel")
    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x + 1}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(root / "6"), signatures={"other": module.f})
    before = config_text(params)

    with pytest.raises(PetsegError, match=r"rollback to version 5 refused: .*does not load.*models.config unchanged"):
        ModelStore.from_params(params).rollback(5, infra_check=validate_served_copy)
    with pytest.raises(PetsegError, match=r"rollback to version 6 refused: .*lacks the contract's signature"):
        ModelStore.from_params(params).rollback(6, infra_check=validate_served_copy)
    assert config_text(params) == before

    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"push:\n  model_base_path: {params.model_base_path}\n")
    assert main(["rollback", "--to", "5", "--params", str(params_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollback to version 5 refused" in err[0]
    assert config_text(params) == before


def test_rollback_to_a_version_pushed_before_serving_png_is_refused_in_one_line(
    rule_savedmodels, tmp_path, push_version, capsys
):
    """A version exported before serving_png joined the contract: its REST apps would get 400, so it is not served."""
    import tensorflow as tf

    from petseg.components.store.warmup import WARMUP_FILE, warmup_requests, write_warmup_file

    params = store_params(tmp_path)
    push_version(rule_savedmodels["perfect"], params)
    root = Path(ModelStore.from_params(params).root)
    old = root / "1"
    shutil.copytree(old, root / "3")  # a copy of a pushed version, then stripped to the old two-signature contract
    loaded = tf.saved_model.load(str(old))
    tf.saved_model.save(
        loaded,
        str(root / "2"),
        signatures={name: loaded.signatures[name] for name in signatures.SIGNATURES[:2]},
    )
    old_requests = [
        log
        for log in warmup_requests(str(old), params.model_name, 4, 64)
        if log.predict_log.request.model_spec.signature_name != signatures.SIGNATURE_PNG
    ]
    write_warmup_file(str(root / "2" / WARMUP_FILE), old_requests)  # the warm-up records it was pushed with
    before = config_text(params)

    refused = r"rollback to version 2 refused: .*lacks the contract's signature serving_png"
    with pytest.raises(PetsegError, match=refused):
        ModelStore.from_params(params).rollback(2, infra_check=validate_served_copy)
    assert config_text(params) == before
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"push:\n  model_base_path: {params.model_base_path}\n")
    assert main(["rollback", "--to", "2", "--params", str(params_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exported before that signature existed" in err[0] and "rollback --list" in err[0]
    assert config_text(params) == before
    # a version of this release whose warm-up file skips serving_png is still infra-validated through it
    write_warmup_file(str(root / "3" / WARMUP_FILE), old_requests[:1])
    assert validate_served_copy(str(root / "3"), params.model_name)["requests"] == len(signatures.SIGNATURES)


# --------------------------------------------------------------------- lock
def test_a_second_push_waits_for_the_lock_or_is_refused_in_one_line_as_busy(rule_savedmodels, tmp_path, push_version):
    params = store_params(tmp_path, lock_timeout_seconds=0.5)
    push_version(rule_savedmodels["perfect"], params)
    record = tmp_path / "push.json"
    with (
        ModelStore.from_params(params).lock(),
        pytest.raises(model_store.StoreBusyError, match=r"is locked by another push or rollback \(host \S+ pid \d+"),
    ):
        push(
            rule_savedmodels["wrong_10"],
            write_blessing(rule_savedmodels["wrong_10"], params, tmp_path),
            params,
            Lineage(),
            record_file=record,
        )
    assert read_json(record)["status"] == "busy"
    assert ModelStore.from_params(params).version_numbers() == [1]

    patient = store_params(tmp_path, lock_timeout_seconds=30)
    held = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(params, 1.5, held))
    holder.start()
    assert held.wait(30)
    started = time.monotonic()
    result = push(
        rule_savedmodels["wrong_10"], write_blessing(rule_savedmodels["wrong_10"], params, tmp_path), patient, Lineage()
    )
    holder.join()
    assert result.status == "pushed" and result.version == 2 and time.monotonic() - started >= 1.0


def test_two_pushes_started_together_one_wins_the_other_is_told_why(rule_savedmodels, tmp_path, push_version):
    params = store_params(tmp_path)
    push_version(rule_savedmodels["perfect"], params)
    blessings = {name: write_blessing(rule_savedmodels[name], params, tmp_path) for name in ("wrong_10", "wrong_30")}
    outcomes: dict[str, object] = {}

    def run(name):
        try:
            outcomes[name] = push(
                rule_savedmodels[name], blessings[name], params, Lineage(), record_file=tmp_path / f"{name}.json"
            )
        except PetsegError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in blessings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pushed = [n for n, o in outcomes.items() if not isinstance(o, Exception)]
    (loser,) = [n for n, o in outcomes.items() if isinstance(o, Exception)]
    assert len(pushed) == 1 and outcomes[pushed[0]].version == 2
    assert "the served version changed since evaluation" in str(outcomes[loser])
    assert read_json(tmp_path / f"{loser}.json")["status"] == "failed"  # not infra_validation_failed
    assert ModelStore.from_params(params).version_numbers() == [1, 2]


def _hold_lock(params, seconds, held: threading.Event | None = None):
    with ModelStore.from_params(params).lock():
        if held is not None:
            held.set()
        time.sleep(seconds)


# ------------------------------------------------------------- killed pushes
KILL_SCRIPT = """
import sys
from pathlib import Path
from petseg.components.core.params import PushParams
from petseg.components.contracts.lineage import Lineage
from petseg.components.push import push
push(Path(sys.argv[1]), Path(sys.argv[2]), PushParams(model_base_path=sys.argv[3], warmup_requests=2), Lineage())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_after,delay",
    [
        ("push: staging", 0.0),  # copying
        ("push: staging", 0.4),  # validating
        ("push: infra validation passed", 0.0),  # recording, renaming
        ("push: published", 0.0),  # pointing models.config (after the commit point)
    ],
)
def test_a_push_killed_at_any_point_leaves_nothing_that_counts_as_a_version(
    kill_after, delay, rule_savedmodels, tmp_path, push_version
):
    params = store_params(tmp_path, warmup_requests=2)
    push_version(rule_savedmodels["perfect"], params)
    config_before = config_text(params)
    model = rule_savedmodels["wrong_10"]
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILL_SCRIPT,
            str(model),
            str(write_blessing(model, params, tmp_path)),
            params.model_base_path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(kill_after):
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)

    published = ModelStore.from_params(params).read_record()["published"]
    if kill_after == "push: published":  # killed after the commit point: whole, recorded, possibly not served yet
        assert ModelStore.from_params(params).version_numbers() == [1, 2] and set(published) == {1, 2}
        assert ModelStore.from_params(params).served_version() in (1, 2)
    else:
        assert ModelStore.from_params(params).version_numbers() == [1] and set(published) == {1}
        assert ModelStore.from_params(params).served_version() == 1 and config_text(params) == config_before
    # the next push cleans up after the killed one and gets a fresh number
    nxt = push(
        rule_savedmodels["wrong_30"], write_blessing(rule_savedmodels["wrong_30"], params, tmp_path), params, Lineage()
    )
    assert nxt.status == "pushed"
    leftovers = [
        n
        for n in os.listdir(ModelStore.from_params(params).root)
        if n.startswith((model_store.STAGING_PREFIX, model_store.DELETING_PREFIX))
    ]
    assert leftovers == [] and ModelStore.from_params(params).read_record()["publishing"] == []
    assert sorted(
        json.loads(Path(ModelStore.from_params(params).root, model_store.RECORD_FILE).read_text())["published"]
    ) == [str(v) for v in ModelStore.from_params(params).version_numbers()]


def test_serve_refuses_an_unsafe_model_name_in_one_line(capsys):
    code = main(["serve", "--model-name", "../x", "--params", str(REPO_ROOT / "params.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "'--model-name' must be letters" in err[0]


# ----------------------------------------------------------- property-based
@given(st.text(max_size=40))
def test_any_accepted_model_name_stays_one_folder_inside_the_base_path(name):
    try:
        check_model_name(name, "push.model_name")
    except ParamsError:
        return
    joined = os.path.normpath(os.path.join("/base", name))
    assert os.path.dirname(joined) == "/base" and os.path.basename(joined) == name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(label=st.sampled_from(["stable", ""]), data=st.data())
def test_any_sequence_of_switches_is_accepted_and_serves_what_was_reported(label, data, sim_server):
    """Random switch sequences, with the server polling after some writes and not others."""
    service, target = sim_server
    sequence = data.draw(st.lists(st.integers(1, 4), min_size=2, max_size=6), label="versions")
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        params = store_params(
            Path(tmp), version_label=label, serving_target=target if label else "", promote_timeout_seconds=5.0
        )
        for version in range(1, 5):  # the sim only looks for saved_model.pb; the store is not asked to load
            Path(ModelStore.from_params(params).version_path(version)).mkdir(parents=True)
            Path(ModelStore.from_params(params).version_path(version), "saved_model.pb").write_bytes(b"")
        real_write = storage.write_text_atomically

        def maybe_poll(path, text):
            real_write(path, text)
            if service.sim is not None and data.draw(st.booleans(), label="server polls now"):
                service.sim.poll()

        patch.setattr(storage, "write_text_atomically", maybe_poll)
        service.sim = None
        ModelStore.from_params(params).serve_version(sequence[0], log=lambda _: None)
        service.sim = TfServingSim(ModelStore.from_params(params).config_path, "petseg", deploy_flags())
        service.sim.start()
        for version in sequence[1:]:
            ModelStore.from_params(params).serve_version(version, log=lambda _: None)
            service.sim.settle()
            assert service.sim.answer() == version and ModelStore.from_params(params).served_version() == version
            if label:
                assert service.sim.answer(label) == version
        assert service.sim.refusals == [] and service.sim.violations == []


def test_only_the_model_store_parses_models_config_or_lists_version_folders():
    """One owner of the model base path: nothing else reads ModelServerConfig or picks all-digit folder names."""
    owners = set()
    for folder in ("components", "serving", "pipeline", "src", "bench", "scripts"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if any(marker in text for marker in ("model_server_config_pb2", "isdigit()", "MODELS_CONFIG_FILE")):
                owners.add(path.relative_to(REPO_ROOT).as_posix())
    assert owners == {"components/store/model_store.py"}
