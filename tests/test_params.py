import pytest
import yaml
from helpers import REPO_ROOT

from petseg.components.core.errors import ParamsError
from petseg.components.core.params import Params, load_params, params_from_dict, params_to_dict, with_overrides


def test_project_params_yaml_parses_and_lists_every_key():
    """DVC tracks only keys present in params.yaml, so it must spell out every parameter."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert raw == params_to_dict(load_params(REPO_ROOT / "params.yaml"))
    assert _keys(raw) == _keys(params_to_dict(Params()))


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_params_are_frozen():
    params = Params()
    with pytest.raises(AttributeError):
        params.train.epochs = 3


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"sourse": "tfds"}}, "unknown key 'data.sourse'"),
        ({"bogus": {}}, "unknown key 'bogus'"),
        ({"data": {"source": "kaggle"}}, "'data.source' must be one of tfds, archives, synthetic"),
        ({"preprocess": {"image_size": "128"}}, "'preprocess.image_size' must be an integer"),
        ({"preprocess": {"image_size": 8}}, "'preprocess.image_size' must be at least 32"),
        ({"preprocess": {"val_fraction": 0.9}}, "'preprocess.val_fraction' must be at most 0.5"),
        ({"train": {"learning_rate": 0}}, "'train.learning_rate' must be greater than 0"),
        ({"train": {"cache": "yes"}}, "'train.cache' must be true or false"),
        ({"data": {"synthetic": {"train_examples": 1.5}}}, "'data.synthetic.train_examples' must be an integer"),
        ({"data": {"synthetic": {"min_side": 400, "max_side": 300}}}, "min_side must not exceed"),
        ({"data": "synthetic"}, "'data' must be a mapping"),
        ({"validate": {"critical": "ids_unique"}}, "'validate.critical' must be a list"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        params_from_dict(raw)


def test_numbers_are_coerced_only_int_to_float():
    assert params_from_dict({"train": {"learning_rate": 1}}).train.learning_rate == 1.0
    with pytest.raises(ParamsError):
        params_from_dict({"train": {"epochs": True}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_overrides_are_validated():
    params = with_overrides(Params(), {"train.epochs": 2, "data.source": "synthetic"})
    assert (params.train.epochs, params.data.source) == (2, "synthetic")
    with pytest.raises(ParamsError, match=r"unknown key 'train\.epoch'"):
        with_overrides(Params(), {"train.epoch": 2})
    with pytest.raises(ParamsError, match="must be at least 1"):
        with_overrides(Params(), {"train.epochs": 0})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_overrides_refuse_non_finite_numbers(value):
    with pytest.raises(ParamsError, match=r"'serve\.poll_seconds' must be a finite number"):
        with_overrides(Params(), {"serve.poll_seconds": value})


def test_partial_file_takes_defaults_for_missing_sections(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: synthetic\n")
    params = load_params(path)
    assert params.data.source == "synthetic" and params.train == Params().train


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "data:\n  source: synthetic\nvalidate: &v\n  min_train_examples: 3\n"
        "preprocess:\n  seed: 1\n  <<: {image_size: 64}\n"
    )
    params = load_params(path)
    assert params.validate.min_train_examples == 3 and params.preprocess.image_size == 64
