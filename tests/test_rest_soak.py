"""bench/soak_rest.py, smaller: 16 loopback clients (large bodies, small requests, deep JSON, drops) for 20 s.

The server runs as its own process under an 8 GiB address-space cap; the soak's
own checks (server up, VmHWM within warm RSS + 1.5 GiB, every small request
answered 200, deep JSON 400, large bodies 200/503/413 only, no traceback, at most
one log line per dropped client) must all hold.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from helpers import REPO_ROOT

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak_rest", REPO_ROOT / "bench" / "soak_rest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.slow
def test_sixteen_hostile_and_ordinary_clients_neither_crash_nor_bloat_the_server(soak_module, tiny_savedmodel):
    args = soak_module.parse_args(
        [
            "--clients", "16", "--seconds", "20", "--max-requests", "40", "--large-mib", "12",
            "--budget-mb", "64", "--as-limit-gib", "8", "--rss-growth-mib", "1536", "--model", str(tiny_savedmodel),
        ]
    )  # fmt: skip
    figures = soak_module.soak(args, show=lambda line: None)

    failed = [name for name, ok in figures["checks"].items() if not ok]
    assert failed == [], (failed, figures)
    statuses = figures["statuses"]
    assert statuses["drop"].get("dropped", 0) >= 1 and statuses["deep"]["400"] >= 1
    assert statuses["large"].get("200", 0) >= 1  # large bodies are served, not only refused
    assert figures["log_tracebacks"] == 0 and figures["small_answered"] >= 4
