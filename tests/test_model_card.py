"""The model card push writes beside each version: facts from their own artifacts, three forms, a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import REPO_ROOT, write_blessing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petseg.cli import main
from petseg.components.card.build import model_card
from petseg.components.card.render import CONTENT_SECURITY_POLICY
from petseg.components.card.sources import CardSources, read_savedmodel
from petseg.components.contracts import signatures
from petseg.components.contracts.blessing import read_blessing
from petseg.components.contracts.lineage import Lineage, VersionRecord, collect_lineage, version_record
from petseg.components.contracts.validation import DriftComparison, ValidationSummary, write_summary
from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.fsutil import read_json, write_json
from petseg.components.core.params import (
    CardParams,
    EvaluateParams,
    ModelParams,
    Params,
    PushParams,
    UnetParams,
    params_from_dict,
    with_overrides,
)
from petseg.components.evaluate import evaluate
from petseg.components.push import push

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs Debian's chromium)")
SYNTHETIC = with_overrides(Params(), {"data.source": "synthetic", "model.architecture": "unet"})


# ------------------------------------------------------------------ inputs
def write_validation(folder: Path, *, drift_failed: bool = False, reference: bool = True) -> Path:
    """A validation report as validate writes it (summary.json via its contract, and a table)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_summary(
        folder,
        ValidationSummary(
            success=True,
            fingerprint="a" * 64,
            failed_warnings=("no_drift_brightness",) if drift_failed else ("pet_fraction_in_bounds",),
            drift_reference=DriftComparison("serving/models/petseg/1/drift_reference", "e" * 64) if reference else None,
        ),
    )
    (folder / "examples.csv").write_text("id,split\nx,trainval\n")
    return folder


def write_training(folder: Path) -> tuple[Path, Path]:
    """train's metrics.json and DVCLive's per-epoch plot files, written by DVCLive itself."""
    from dvclive import Live

    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "metrics.json",
        {"best_epoch": 2, "best_val": {"accuracy": 0.61, "loss": 0.83, "mean_iou": 0.42}, "epochs_run": 3},
    )
    live_dir = folder / "dvclive"
    live = Live(str(live_dir), report=None, save_dvc_exp=False, dvcyaml=None)
    for epoch in range(3):
        for split, offset in (("train", 0.0), ("val", 0.05)):
            live.log_metric(f"loss/{split}", 1.2 - 0.2 * epoch + offset)
            live.log_metric(f"mean_iou/{split}", 0.2 + 0.1 * epoch - offset)
            live.log_metric(f"accuracy/{split}", 0.5 + 0.05 * epoch - offset)
        live.next_step()
    live.end()
    return folder / "metrics.json", live_dir


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_savedmodel, second_savedmodel, tiny_records):
    """Two real pushes (evaluate -> push, then evaluate against the served version -> push) with every card input."""
    root = tmp_path_factory.mktemp("card")
    store = PushParams(model_base_path=str(root / "serving"), warmup_requests=1)
    gate = EvaluateParams(min_mean_iou=0.0, min_accuracy=0.0, max_regression=1.0, sample_predictions=2)
    train_metrics, live_dir = write_training(root / "models")
    lineage = collect_lineage(tiny_records, SYNTHETIC, repo_dir=REPO_ROOT)
    results = {}
    for name, model, validation in (
        ("first", tiny_savedmodel, write_validation(root / "validation1", reference=False)),
        ("second", second_savedmodel, write_validation(root / "validation2", drift_failed=True)),
    ):
        evaluate(model, tiny_records, gate, store, root / f"ev-{name}")
        sources = CardSources(
            records_dir=tiny_records,
            train_metrics=train_metrics,
            live_dir=live_dir,
            tf_serving_release="2.20.0",
            use=SYNTHETIC.card,
        )
        results[name] = push(
            model,
            root / f"ev-{name}",
            store,
            lineage,
            drift_reference=validation,
            card=sources,
            card_out=root / f"card-{name}",
        )
    return {"root": root, "store": store, "results": results, "records": tiny_records}


def card_dir(pushed, name: str) -> Path:
    return Path(pushed["results"][name].card)


# ------------------------------------------------- the facts, against their sources
def test_each_pushed_version_has_its_card_in_three_forms(pushed):
    for name, version in (("first", 1), ("second", 2)):
        folder = card_dir(pushed, name)
        assert folder == Path(pushed["store"].model_base_path) / "petseg" / str(version) / "model_card"
        assert sorted(p.name for p in folder.iterdir()) == ["model_card.html", "model_card.json", "model_card.md"]
        for path in folder.iterdir():  # the copy push wrote for DVC / Kubeflow is the same card
            assert (pushed["root"] / f"card-{name}" / path.name).read_bytes() == path.read_bytes()


def test_card_json_values_are_the_artifacts_values(pushed, tiny_savedmodel):
    root, folder = pushed["root"], card_dir(pushed, "second")
    card = read_json(folder / "model_card.json")
    metrics = read_json(root / "ev-second" / "metrics.json")
    blessing = read_json(root / "ev-second" / "blessing.json")
    lineage = read_json(folder.parent / "lineage.json")
    manifest = read_json(pushed["records"] / "manifest.json")

    assert card["schema_version"] == 1 and card["missing"] == []
    assert card["model"]["version"] == 2 == lineage["version"] and card["model"]["status"] == "pushed"
    assert card["model"]["fingerprint"] == lineage["model_fingerprint"] == blessing["model"]["fingerprint"]
    assert card["model"]["tf_serving_release"] == "2.20.0" and card["model"]["tensorflow_version"].startswith("2.")
    assert card["model"]["input_size"] == blessing["data"]["image_size"] == 64
    assert card["model"]["classes"] == ["pet", "background", "border"]
    assert {s["name"] for s in card["model"]["signatures"]} == set(signatures.SIGNATURES)
    ev = card["evaluation"]
    assert ev["mean_iou"] == metrics["mean_iou"] and ev["pixel_accuracy"] == metrics["pixel_accuracy"]
    assert ev["iou"] == metrics["iou"] and ev["test_examples"] == metrics["test_examples"]
    assert ev["confusion_rows"] == metrics["confusion_matrix"]["rows_true_columns_predicted"]
    assert ev["blessed"] is blessing["blessed"] is True and ev["blessing_reason"] == blessing["reason"]
    assert ev["thresholds"] == blessing["thresholds"] and [c["name"] for c in ev["checks"]] == [
        c["name"] for c in blessing["checks"]
    ]
    base = ev["baseline"]
    assert base["version"] == 1 and base["compared"] and base["mean_iou"] == blessing["baseline"]["mean_iou"]
    assert base["delta_mean_iou"] == pytest.approx(metrics["mean_iou"] - blessing["baseline"]["mean_iou"])
    for name, value in metrics["iou"].items():
        if value is not None and blessing["baseline"]["iou"][name] is not None:
            assert base["delta_iou"][name] == pytest.approx(value - blessing["baseline"]["iou"][name])
    assert card["data"]["counts"] == manifest["counts"] == {"train": 48, "val": 16, "test": 16}
    assert (
        card["data"]["data_fingerprint"] == "a" * 64
        and card["data"]["manifest_sha256"] == lineage["data_manifest_sha256"]
    )
    assert card["data"]["drift"]["status"] == "drift" and card["data"]["drift"]["failed"] == ["no_drift_brightness"]
    assert card["training"]["epochs_run"] == 3 and card["training"]["best_epoch"] == 2
    assert card["training"]["best_val"]["mean_iou"] == 0.42 and card["training"]["params"]["train.epochs"] == 20
    lin = card["lineage"]
    assert lin["git_commit"] == lineage["git_commit"] and lin["git_dirty"] == lineage["git_dirty"]
    assert lin["params_sha256"] == lineage["params_sha256"] and lin["run_id"] == lineage["run_id"]
    assert lin["pushed_at"] == lineage["pushed_at"] and lin["runner"] == "cli"
    assert card["use"]["intended_use"] == CardParams().intended_use
    assert card["use"]["rest_path"] == "/v1/models/petseg/versions/2:predict"
    assert all("request.model_spec.version.value = 2" in q["grpc"] for q in card["use"]["queries"])
    assert all("/v1/models/petseg/versions/2:predict" in q["rest"] for q in card["use"]["queries"])


def test_the_first_version_says_there_was_nothing_to_compare_or_drift_against(pushed):
    card = read_json(card_dir(pushed, "first") / "model_card.json")
    assert card["evaluation"]["baseline"] is None
    assert card["evaluation"]["baseline_text"].startswith("No baseline: no version was served")
    assert card["data"]["drift"]["status"] == "not_checked"
    assert card["data"]["drift"]["text"].startswith("Drift not checked")
    page = (card_dir(pushed, "first") / "model_card.md").read_text()
    assert "No baseline: no version was served" in page and "Drift not checked" in page


def test_weight_counts_are_the_keras_models(tiny_savedmodel):
    from petseg.components.ml.model import build_model

    facts = read_savedmodel(tiny_savedmodel).value
    keras_model = build_model(
        ModelParams(architecture="unet", encoder_weights="none", unet=UnetParams(base_filters=4, depth=2)), 64
    )
    assert facts.parameters == keras_model.count_params()
    assert facts.trainable_parameters == sum(int(w.numpy().size) for w in keras_model.trainable_weights)


def test_a_model_trained_on_the_synthetic_set_says_so_first(pushed):
    card = read_json(card_dir(pushed, "first") / "model_card.json")
    assert card["warnings"][0].startswith("TRAINED ON SYNTHETIC DATA")
    page = (card_dir(pushed, "first") / "model_card.html").read_text()
    body = page[page.index("<body>") :]
    assert body.index("TRAINED ON SYNTHETIC DATA") < body.index('id="model"')  # above every section
    markdown = (card_dir(pushed, "first") / "model_card.md").read_text()
    assert markdown.index("TRAINED ON SYNTHETIC DATA") < markdown.index("## Model")


def test_a_card_with_every_optional_input_missing_names_each_gap(rule_savedmodels, tmp_path):
    """No metrics.json, no validation, no records, no training files, no release, no baseline: words, not blanks."""
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    blessing = write_blessing(rule_savedmodels["perfect"], store, tmp_path)  # evaluate's format, no metrics.json
    result = push(rule_savedmodels["perfect"], blessing, store, Lineage(), card_out=tmp_path / "card")
    card = read_json(Path(result.card) / "model_card.json")
    missing = " | ".join(card["missing"])
    for words in (
        "evaluation metrics.json: ",
        "validation report: not given to push",
        "records manifest: no records folder given to push",
        "train's metrics.json: not given to push",
        "training curves: no DVCLive folder given to push",
        "TF Serving release: not given to push",
        "data source: the lineage records no params",
    ):
        assert words in missing, words
    assert card["data"]["drift"]["text"].startswith("Drift unknown: validation report: not given to push")
    page = (Path(result.card) / "model_card.html").read_text()
    cells = TextCells.of(page)
    assert cells.empty == [] and "None" not in cells.texts  # every cell says something
    assert "Confusion matrix: evaluate's folder" not in page  # the folder was given (the blessing's), the file not
    assert "not found" in page and "not recorded" in page
    markdown = (Path(result.card) / "model_card.md").read_text()
    assert "| None |" not in markdown and "||" not in markdown.replace("|---|", "")


def test_an_unchanged_push_copies_the_served_versions_card(pushed, tiny_savedmodel):
    """Pushing the served model again changes nothing; the card copy describes the served version."""
    root = pushed["root"]
    store = replace(pushed["store"], model_base_path=str(root / "serving-unchanged"))
    blessing = write_blessing(tiny_savedmodel, store, root)
    push(tiny_savedmodel, blessing, store, Lineage(run_id="one"))
    again = push(tiny_savedmodel, blessing, store, Lineage(run_id="two"), card_out=root / "card-unchanged")
    assert again.status == "unchanged" and again.card == str(
        Path(store.model_base_path) / "petseg" / "1" / "model_card"
    )
    card = read_json(root / "card-unchanged" / "model_card.json")
    assert card["model"]["status"] == "unchanged" and card["model"]["version"] == 1
    assert card["lineage"]["run_id"] == "one"  # the served version's record, not this run's


def test_rollback_list_names_each_versions_card(pushed, capsys, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"push:\n  model_base_path: {pushed['store'].model_base_path}\n")
    assert main(["rollback", "--list", "--params", str(params_file)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][-1] == "card"
    assert [r[-1] for r in rows[1:]] == [str(card_dir(pushed, n) / "model_card.html") for n in ("second", "first")]


# ------------------------------------------------------------- rendering
class TextCells(HTMLParser):
    """The text of every table cell, list item and element with an id, from an HTML page."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.cells: list[tuple[str, str]] = []
        self.by_id: dict[str, str] = {}
        self._buffers: list[list[str]] = []

    @classmethod
    def of(cls, page: str) -> TextCells:
        parser = cls()
        parser.feed(page)
        return parser

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link"):
            return
        self.stack.append((tag, dict(attrs).get("id")))
        self._buffers.append([])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            return
        name, ident = self.stack.pop()
        text = " ".join("".join(self._buffers.pop()).split())
        if self._buffers:
            self._buffers[-1].append(" " + text + " ")
        if name in ("td", "th", "li"):
            self.cells.append((name, text))
        if ident:
            self.by_id[ident] = text

    def handle_data(self, data):
        if self._buffers:
            self._buffers[-1].append(data)

    @property
    def empty(self) -> list[tuple[str, str]]:
        return [c for c in self.cells if not c[1] and c[0] != "th"]

    @property
    def texts(self) -> list[str]:
        return [t for _, t in self.cells]


def chromium(*args: str, page: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """Headless Chromium on a file: URL, with a throwaway profile and Chrome's own background traffic off."""
    profile = page.parent / f".chromium-{page.stem}"
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for, from Chromium's NetLog.

    A request a file: page makes carries that page's site in its network
    isolation key ("file://"); Chromium's own background traffic (update checks,
    accounts) does not, and is not the page's doing.
    """
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start
        and "url" in event.get("params", {})
        and str(event["params"].get("network_isolation_key", "")).startswith("file://")
    ]


@needs_chromium
def test_chromium_renders_the_card_with_the_artifacts_values_and_no_network_request(pushed, tmp_path):
    folder = card_dir(pushed, "second")
    page = tmp_path / "model_card.html"
    shutil.copyfile(folder / "model_card.html", page)
    netlog, shot = tmp_path / "netlog.json", tmp_path / "card.png"
    dom = chromium(f"--log-net-log={netlog}", "--dump-dom", page=page).stdout
    chromium("--hide-scrollbars", f"--screenshot={shot}", "--window-size=1000,4000", page=page)
    assert page_requests(netlog) == []
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000  # a page, not a blank

    shown = TextCells.of(dom).by_id
    metrics = read_json(pushed["root"] / "ev-second" / "metrics.json")
    lineage = read_json(folder.parent / "lineage.json")
    assert shown["title"] == "Model card: petseg version 2"
    assert (
        shown["mean-iou"] == f"{metrics['mean_iou']:.4f}"
        and shown["pixel-accuracy"] == f"{metrics['pixel_accuracy']:.4f}"
    )
    for name, value in metrics["iou"].items():
        assert shown[f"iou-{name}"] == (f"{value:.4f}" if value is not None else "not recorded")
    assert shown["commit"] == lineage["git_commit"] and shown["run-id"] == lineage["run_id"]
    assert shown["counts"] == "train: 48, val: 16, test: 16" and shown["tf-serving"] == "2.20.0"
    assert (
        shown["blessing"].startswith("Blessed.")
        and read_json(pushed["root"] / "ev-second" / "blessing.json")["reason"] in shown["blessing"]
    )
    assert "no_drift_brightness" in shown["drift"] and shown["epochs-run"] == "3" and shown["best-epoch"] == "2"
    assert "Version 1" in dom and shown["baseline"].startswith("Compared with version 1")
    assert dom.count('src="data:image/png;base64,') == 3  # curves, confusion matrix, sample predictions
    assert "<script" not in dom


@needs_chromium
def test_the_network_check_sees_a_page_that_fetches_and_the_cards_policy_stops_it(tmp_path):
    """The detector above is not blind: a page with remote resources shows up as the page's requests;
    the same page under the card's Content-Security-Policy makes none."""
    remote = '<img src="http://127.0.0.1:9/x.png"><link rel="stylesheet" href="http://127.0.0.1:9/a.css">'
    for name, head in (
        ("open", ""),
        (
            "card_policy",
            f'<meta http-equiv="Content-Security-Policy" content="{html.escape(CONTENT_SECURITY_POLICY)}">',
        ),
    ):
        page = tmp_path / f"{name}.html"
        page.write_text(f"<!doctype html><html><head>{head}</head><body>{remote}</body></html>")
        netlog = tmp_path / f"{name}.json"
        chromium(f"--log-net-log={netlog}", "--dump-dom", page=page)
        expected = ["http://127.0.0.1:9/a.css", "http://127.0.0.1:9/x.png"] if name == "open" else []
        assert sorted(page_requests(netlog)) == expected, name


@needs_chromium
def test_the_card_fits_a_narrow_window_without_sideways_scrolling(pushed, tmp_path):
    """At Chromium's narrowest headless window (500 px) the page is no wider than the window.

    The card has no script; a copy with a probe script (and without the policy
    that forbids it) writes the page's scroll width into the DOM.
    """
    page = (card_dir(pushed, "second") / "model_card.html").read_text()
    probe = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace(
        "</body>",
        "<script>document.body.dataset.scroll = document.documentElement.scrollWidth;"
        "document.body.dataset.inner = window.innerWidth;</script></body>",
    )
    path = tmp_path / "probe.html"
    path.write_text(probe)
    dom = chromium("--window-size=400,900", "--dump-dom", page=path).stdout
    scroll, inner = (int(x) for x in re.search(r'data-scroll="(\d+)" data-inner="(\d+)"', dom).groups())
    assert inner <= 500 and scroll <= inner


def test_the_page_allows_no_fetch_and_no_script(pushed):
    page = (card_dir(pushed, "second") / "model_card.html").read_text()
    [policy] = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert html.unescape(policy) == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "script-src" not in CONTENT_SECURITY_POLICY
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"] * 3


WORDS = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40).filter(lambda t: t.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    intended=WORDS | st.sampled_from(["<script>alert(1)</script>", "a | b\n## c", "&amp; <b>x</b>"]),
    limitations=st.lists(WORDS, max_size=3),
)
def test_any_words_in_params_are_shown_as_text_never_as_markup(tiny_savedmodel, tmp_path, intended, limitations):
    """The card section of params.yaml is the user's: any characters (markup, pipes, newlines) stay text."""
    use = CardParams(intended_use=intended, limitations=tuple(limitations))
    blessing_file = tmp_path / "ev" / "blessing.json"
    if not blessing_file.exists():
        write_json(blessing_file, {"blessed": False, "reason": "r", "model": {"fingerprint": "f"}})
    blessing = read_blessing(blessing_file)
    record = version_record(Lineage(), blessing, "petseg", str(tiny_savedmodel))
    _, files = model_card(record, blessing, tiny_savedmodel, CardSources(use=use), "declined", "test")
    page = files["model_card.html"].decode()
    shown = TextCells.of(page)
    assert shown.by_id["intended-use"] == " ".join(intended.split())  # parsed back: the same words, no tags
    items = [t for name, t in shown.cells if name == "li"]
    assert all(" ".join(text.split()) in items for text in limitations)
    assert "<script" not in page.lower()
    assert json.loads(files["model_card.json"])["use"]["limitations"] == limitations
    markdown = files["model_card.md"].decode()
    assert markdown.count("\n## ") == 6  # the six section headings, whatever the user wrote


# --------------------------------------------------------------- params and release
def test_card_params_parse_with_honest_defaults_and_refuse_empty_words():
    assert params_from_dict({"card": {"intended_use": "x"}}).card.limitations == CardParams().limitations
    assert any("Oxford-IIIT Pet" in t for t in CardParams().limitations)
    with pytest.raises(ParamsError, match=r"'card.intended_use' must say what the model is for"):
        params_from_dict({"card": {"intended_use": "  "}})
    with pytest.raises(ParamsError, match=r"'card.limitations\[1\]' is empty"):
        params_from_dict({"card": {"limitations": ["a", ""]}})
    with pytest.raises(ParamsError, match=r"unknown key 'card.owner'"):
        params_from_dict({"card": {"owner": "me"}})
    with pytest.raises(ParamsError, match=r"'card.limitations' must be a list"):
        params_from_dict({"card": {"limitations": "one string"}})


def test_an_older_version_without_a_card_is_listed_with_a_dash(tmp_path, capsys, rule_savedmodels):
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    result = push(
        rule_savedmodels["perfect"], write_blessing(rule_savedmodels["perfect"], store, tmp_path), store, Lineage()
    )
    shutil.rmtree(result.card)  # as a version pushed before cards existed
    lineage_file = Path(result.path) / "lineage.json"
    old = read_json(lineage_file)
    for key in ("params_sha256", "infra_validation", "blessing"):
        old.pop(key)
    write_json(lineage_file, old)
    assert VersionRecord.from_json(old).blessing.blessed is None
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"push:\n  model_base_path: {store.model_base_path}\n")
    capsys.readouterr()
    assert main(["rollback", "--list", "--params", str(params_file)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "-"


def test_a_card_folder_push_did_not_write_is_refused_before_anything_is_pushed(rule_savedmodels, tmp_path, capsys):
    store = PushParams(model_base_path=str(tmp_path / "serving"), warmup_requests=1)
    blessing = write_blessing(rule_savedmodels["perfect"], store, tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "a-file").write_text("keep me too")
    for card_out, message in (
        (mine, f"--card-out {mine}: holds 'notes.txt', which push did not write"),
        (tmp_path / "a-file", f"--card-out {tmp_path / 'a-file'}: exists and is not a folder"),
    ):
        with pytest.raises(PetsegError, match=re.escape(message)):
            push(rule_savedmodels["perfect"], blessing, store, Lineage(), card_out=card_out)
    assert (mine / "notes.txt").read_text() == "keep me" and (tmp_path / "a-file").read_text() == "keep me too"
    assert not (tmp_path / "serving").exists()  # refused before the store was touched
    # a folder holding only an earlier card is push's own: replaced
    done = tmp_path / "card"
    push(rule_savedmodels["perfect"], blessing, store, Lineage(), card_out=done)
    again = write_blessing(rule_savedmodels["wrong_10"], store, tmp_path)
    assert push(rule_savedmodels["wrong_10"], again, store, Lineage(), card_out=done).version == 2
    assert read_json(done / "model_card.json")["model"]["version"] == 2
