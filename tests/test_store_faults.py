"""Object-store faults are one line, through the real `petseg` commands, against a real S3 server.

moto_server (from the test extra) runs on loopback with IAM authentication
switched on after the bucket and two users are made (`/moto-api/reset-auth`):
`admin` may do anything, `nopolicy` has a key and no permission at all. Each
fault is then what S3 itself answers: InvalidAccessKeyId for an unknown key id,
SignatureDoesNotMatch for a wrong secret, AccessDenied for a key without
permission, NoSuchBucket for a bucket that is not there. Two faults need no
S3 server: an unreachable endpoint is a closed loopback port, and throttling is
a loopback HTTP server that answers every request `503 SlowDown` as S3 does
when it throttles (it also counts the requests, so the test sees that the
client's retries are bounded).

Each command runs in its own process, with its own HOME and TMPDIR, as a user
would run it: exit code 1, exactly one `petseg <command>: error:` line on
stderr that names the store (`s3://bucket`) and what to do, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError
from helpers import MOTO_SERVER, moto_server, tiny_params_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from petseg.components.ml.cluster import free_ports
from petseg.components.store import storage
from petseg.components.store.storage import store_fault

PETSEG = str(Path(sys.executable).parent / "petseg")
BUCKET = "petseg-faults"

pytestmark = pytest.mark.skipif(
    not os.path.exists(MOTO_SERVER), reason="moto_server not installed (pip install -e '.[test]')"
)


# ------------------------------------------------------------------ servers
def _set_auth(endpoint: str, free_actions: str) -> None:
    """moto's switch: authenticate every request after `free_actions` more ('inf' = never)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=free_actions.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="module")
def s3_auth(tmp_path_factory) -> dict:
    """A moto S3 server that checks credentials: its endpoint, the admin key and a key without permissions."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        bootstrap = {
            "endpoint_url": endpoint,
            "aws_access_key_id": "bootstrap",
            "aws_secret_access_key": "bootstrap",
            "region_name": "us-east-1",
        }
        boto3.client("s3", **bootstrap).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **bootstrap)
        keys = {}
        for user, policy in (("admin", {"Effect": "Allow", "Action": "*", "Resource": "*"}), ("nopolicy", None)):
            iam.create_user(UserName=user)
            if policy:
                document = json.dumps({"Version": "2012-10-17", "Statement": [policy]})
                iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=document)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        _set_auth(endpoint, "0")
        yield {"endpoint": endpoint, "keys": keys}


class _Throttling:
    """An S3 endpoint that answers every request 503 SlowDown (S3's throttling answer), counting them."""

    def __init__(self):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = (
                    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b"<Message>Please reduce your request rate.</Message><RequestId>T</RequestId></Error>"
                )
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def throttling():
    server = _Throttling()
    yield server
    server.close()


# ------------------------------------------------------------------ running petseg
FAULTS = ("wrong_key", "wrong_secret", "denied", "missing_bucket", "unreachable", "throttled")
EXPECTED = {
    "wrong_key": ("InvalidAccessKeyId", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    "wrong_secret": ("SignatureDoesNotMatch", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    "denied": ("access denied (AccessDenied)", "grant this identity s3:ListBucket"),
    "missing_bucket": ("the bucket does not exist", "create it, or fix the bucket name"),
    "unreachable": ("cannot reach the store at http://127.0.0.1:", "check AWS_ENDPOINT_URL_S3"),
    "throttled": (f"throttling requests (SlowDown) after {storage.MAX_ATTEMPTS} tries", "try again later"),
}


def _fault_env(fault: str, s3_auth: dict, throttling: _Throttling, home: Path) -> tuple[dict, str]:
    """(environment, bucket) under which the store shows `fault`."""
    admin_key, admin_secret = s3_auth["keys"]["admin"]
    key, secret, endpoint, bucket = admin_key, admin_secret, s3_auth["endpoint"], BUCKET
    if fault == "wrong_key":
        key = "AKIAWRONGWRONGWRONG0"
    elif fault == "wrong_secret":
        secret = "not-the-secret"
    elif fault == "denied":
        key, secret = s3_auth["keys"]["nopolicy"]
    elif fault == "missing_bucket":
        bucket = "petseg-no-such-bucket"
    elif fault == "unreachable":
        endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    elif fault == "throttled":
        endpoint = throttling.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
        HOME=str(home),
        TMPDIR=str(home),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env, bucket


def _petseg(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PETSEG, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _assert_one_store_line(proc: subprocess.CompletedProcess, command: str, bucket: str, fault: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"petseg {command}: error: ")]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert f"s3://{bucket}" in line, line
    what, way_out = EXPECTED[fault]
    assert what in line and way_out in line, line
    print(line)  # shown with -s: the lines docs/model-store.md lists
    return line


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder holding params.yaml (model base path on the fault bucket), a model and a blessing for it."""
    home = tmp_path / "home"
    home.mkdir()
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"not loaded: push stops at the store before it loads the model")
    return tmp_path


def _write_case(workdir: Path, bucket: str) -> None:
    from petseg.components.store.model_store import model_fingerprint

    base = f"s3://{bucket}/serving"
    params = tiny_params_dict({"push": {"model_base_path": base, "server_model_base_path": ""}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    blessing = {
        "blessed": True,
        "reason": "given by the test",
        "checks": [],
        "candidate": {"mean_iou": 0.9},
        "baseline": None,
        "model": {"path": str(workdir / "model"), "fingerprint": model_fingerprint(workdir / "model")},
        "data": {"image_size": 32},
        "push_target": f"{base}/petseg",
    }
    (workdir / "evaluation").mkdir(exist_ok=True)
    (workdir / "evaluation" / "blessing.json").write_text(json.dumps(blessing))


COMMANDS = {
    "rollback --list": ["rollback", "--list"],
    "rollback": ["rollback"],
    "push": ["push", "--model", "model", "--evaluation", "evaluation", "--records", "none", "--out", "push.json"],
    "validate": ["validate", "--raw", "raw", "--out", "validation", "--reference", "served"],
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_store_fault_is_one_line_for_each_command(command, fault, s3_auth, throttling, workdir):
    env, bucket = _fault_env(fault, s3_auth, throttling, workdir / "home")
    _write_case(workdir, bucket)
    before = throttling.requests
    proc = _petseg(COMMANDS[command], env, workdir)
    _assert_one_store_line(proc, COMMANDS[command][0], bucket, fault)
    if fault == "throttled":  # bounded: a probe of MAX_ATTEMPTS tries (push probes again to record the failure)
        assert throttling.requests - before == storage.MAX_ATTEMPTS * (2 if command == "push" else 1)
    assert not (workdir / "validation").exists()  # validate stops before writing its report
    if command == "push":
        record = json.loads((workdir / "push.json").read_text())
        assert record["status"] == "failed" and record["version"] is None and f"s3://{bucket}" in record["reason"]


@pytest.mark.slow  # loads TensorFlow and two SavedModels per case
@pytest.mark.parametrize("fault", ["wrong_key", "unreachable"])
def test_evaluate_reading_its_baseline_gets_one_line(
    fault, s3_auth, throttling, workdir, rule_savedmodels, coded_records
):
    env, bucket = _fault_env(fault, s3_auth, throttling, workdir / "home")
    _write_case(workdir, bucket)
    args = ["evaluate", "--model", str(rule_savedmodels["perfect"]), "--records", str(coded_records)]
    proc = _petseg([*args, "--out", "ev"], env, workdir)
    _assert_one_store_line(proc, "evaluate", bucket, fault)
    assert not (workdir / "ev").exists()


def test_with_good_credentials_the_same_commands_work(s3_auth, throttling, workdir):
    """The control: the admin key on the existing bucket lists an empty store and refuses a plain rollback."""
    env, bucket = _fault_env("none", s3_auth, throttling, workdir / "home")
    _write_case(workdir, bucket)
    listed = _petseg(COMMANDS["rollback --list"], env, workdir)
    assert listed.returncode == 0 and listed.stdout.splitlines()[0].split()[0] == "version", listed.stderr
    refused = _petseg(COMMANDS["rollback"], env, workdir)
    assert refused.returncode == 1 and "no versions under s3://petseg-faults/serving/petseg" in refused.stderr


# ------------------------------------------------------------------ the translation itself
def _client_error(code: str, status: int, message: str, retries: int = 0) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


def _as_s3fs_raises(error: BaseException) -> BaseException:
    """What s3fs raises: an OSError subclass whose __cause__ is botocore's error."""
    try:
        try:
            raise error
        except Exception as inner:
            raise PermissionError(str(inner)) from inner
    except PermissionError as outer:
        return outer


paths = st.builds(
    lambda kind, bucket, key: f"{kind}://{bucket}/{key}",
    st.sampled_from(["s3", "gs"]),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{2,40}", fullmatch=True),
    st.text(min_size=0, max_size=60),
)


@settings(max_examples=200, deadline=None)
@given(path=paths, code=st.text(max_size=80), status=st.integers(0, 599), message=st.text(max_size=200))
def test_any_client_error_is_none_or_one_line_naming_the_store(path, code, status, message):
    line = store_fault(_as_s3fs_raises(_client_error(code, status, message)), path)
    if line is not None:
        assert "\n" not in line and "\r" not in line
        assert line.startswith(storage.store_url(path) + ": ")


@settings(max_examples=100, deadline=None)
@given(path=paths, code=st.sampled_from(["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "SlowDown"]))
def test_known_faults_always_get_their_line(path, code):
    status = 503 if code == "SlowDown" else 403
    line = store_fault(_as_s3fs_raises(_client_error(code, status, "x", retries=2)), path)
    assert line is not None and code in line and line.startswith(storage.store_url(path))


@given(path=paths)
def test_an_unreachable_endpoint_names_it(path):
    error = EndpointConnectionError(endpoint_url="http://10.0.0.9:9000/bucket/key")
    assert store_fault(error, path) == (
        f"{storage.store_url(path)}: cannot reach the store at http://10.0.0.9:9000 "
        f"(EndpointConnectionError: Could not connect to the endpoint URL); "
        + (
            "check AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and that the store is up and reachable from here"
            if path.startswith("s3")
            else "check STORAGE_EMULATOR_HOST / the network route to storage.googleapis.com"
        )
    )


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError("bkt/models/petseg/.petseg-store.json"), ValueError("bug"), KeyError("x")],
)
def test_what_is_not_a_store_fault_is_let_through(error):
    assert store_fault(error, "s3://bkt/models") is None
    assert store_fault(PermissionError("Access Denied"), "/local/path") is None  # local errors are not store faults
