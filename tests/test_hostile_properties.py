"""Property-based tests: random bytes and random lines into the list-file parser, the params
loader and the examples.csv reader. Each must return a result or raise the project's own
error (PetsegError, ParamsError), never anything else, and its message must be one line."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from petseg.components.contracts.rawdata import BREEDS, INDEX_COLUMNS, INDEX_FILE, read_index
from petseg.components.core.errors import ParamsError, PetsegError
from petseg.components.core.params import Params, params_from_yaml
from petseg.components.sources.annotations import parse_list_file

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(error: Exception) -> None:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, repr(text)


# ---------------------------------------------------------------- list files
TOKENS = st.one_of(
    st.sampled_from(
        [
            "Abyssinian_1",
            "Bengal_185",
            "pug_3",
            "../x",
            "#",
            "",
            "1",
            "2",
            "0",
            "37",
            "38",
            "-1",
            "+1",
            "1_0",
            "٣",
            "1.0",
            "99999999",
            "\t",
            "\x00",
            "é",
        ]
    ),
    st.integers(-5, 60).map(str),
    st.text(max_size=12),
)
LINES = st.lists(TOKENS, max_size=6).map(" ".join)


@SETTINGS
@given(st.binary(max_size=400))
@example(b"\xff\xfe")
@example(b"Abyssinian_1 1 1 1\nAbyssinian_1 1 1 1\n")
def test_list_parser_random_bytes(data):
    try:
        entries = parse_list_file(data, "annotations/trainval.txt")
    except PetsegError as exc:
        _one_line(exc)
        return
    for entry in entries:
        assert 1 <= entry.class_id <= len(BREEDS) and entry.species in ("cat", "dog")


@SETTINGS
@given(st.lists(LINES, max_size=12), st.sampled_from(["\n", "\r\n"]))
def test_list_parser_random_lines(lines, newline):
    data = newline.join(lines).encode("utf-8", errors="surrogatepass")
    try:
        entries = parse_list_file(data, "annotations/test.txt")
    except PetsegError as exc:
        _one_line(exc)
        return
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids)), "duplicates are refused, never collapsed"
    for entry in entries:
        assert 1 <= entry.class_id <= len(BREEDS)
        assert entry.species == ("cat" if BREEDS[entry.class_id - 1][0].isupper() else "dog")


# -------------------------------------------------------------------- params
KEYS = st.sampled_from(
    [
        "data",
        "train",
        "serve",
        "source",
        "learning_rate",
        "epochs",
        "poll_seconds",
        "seed",
        "synthetic",
        "archives",
        "path",
        "critical",
        "1",
        "null",
        "<<",
        "on",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from([".nan", ".inf", "-.inf", "1e999", "0x1F", "~", "synthetic", "tfds"]),
)
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


@SETTINGS
@given(st.binary(max_size=300))
@example(b"")
@example(b"a: &x [*x]\n")
@example(b"[" * 2000)
@example(b"train: {epochs: 1, epochs: 2}\n")
@example(b"? [1, 2]\n: 3\n")
def test_params_loader_random_bytes(data):
    try:
        params = params_from_yaml(data, "params.yaml")
    except ParamsError as exc:
        _one_line(exc)
        return
    assert isinstance(params, Params)


@SETTINGS
@given(st.dictionaries(KEYS, YAML_VALUES, max_size=4))
def test_params_loader_random_documents(document):
    text = yaml.safe_dump(document, allow_unicode=True)
    try:
        params = params_from_yaml(text.encode(), "params.yaml")
    except ParamsError as exc:
        _one_line(exc)
        return
    assert isinstance(params, Params)


@SETTINGS
@given(
    st.sampled_from(
        [
            "train.learning_rate",
            "serve.poll_seconds",
            "evaluate.min_mean_iou",
            "data.seed",
            "train.epochs",
            "preprocess.val_fraction",
        ]
    ),
    st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
)
def test_params_numbers_are_finite_or_refused(key, value):
    section, name = key.split(".")
    document = {"data": {"source": "synthetic"}, section: {name: value}}
    try:
        params = params_from_yaml(yaml.safe_dump(document).encode(), "params.yaml")
    except ParamsError as exc:
        _one_line(exc)
        return
    accepted = getattr(getattr(params, section), name)
    assert isinstance(accepted, (int, float)) and accepted == accepted and abs(accepted) != float("inf")


# ----------------------------------------------------------------- examples.csv
@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_index_reader_random_bytes(tmp_path_factory, data, with_header):
    root = tmp_path_factory.mktemp("raw")
    header = (",".join(INDEX_COLUMNS) + "\n").encode() if with_header else b""
    Path(root / INDEX_FILE).write_bytes(header + data)
    try:
        examples = read_index(root)
    except PetsegError as exc:
        _one_line(exc)
        return
    for ex in examples:
        assert 0 <= ex.class_id <= len(BREEDS)
        assert (root / ex.image).resolve().is_relative_to(root.resolve())
