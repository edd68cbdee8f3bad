"""Cluster settings checked once, when params load: Kubernetes quantities, request <= limit, DNS-1123 names.

The quantity parser (components/core/k8s.py) is checked against the Kubernetes Python
client's parse_quantity on every string both accept, by round trips through
format_quantity, and by ordering against known pairs; the CLI commands that write
cluster objects (`pipeline compile`, `pipeline tfjob`) must refuse a bad setting in
one line, naming the key, before writing anything.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity as client_parse_quantity

from petseg.cli import main
from petseg.components.core.errors import ParamsError
from petseg.components.core.k8s import (
    check_dns1123_label,
    check_dns1123_subdomain,
    check_quantity,
    format_quantity,
    parse_quantity,
)
from petseg.components.core.params import load_params, params_to_dict, with_overrides
from petseg.pipeline.component_io import section_params

REPO_ROOT = Path(__file__).resolve().parents[1]
# The pattern controller-gen writes into CRDs for a resource.Quantity field (e.g. the TFJob CRD's
# resources.limits), an independent statement of the grammar.
CRD_QUANTITY_PATTERN = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1, "k": 10**3}
DECIMAL |= {"M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
SUFFIXES = {**BINARY, **DECIMAL}

numbers = st.one_of(
    st.from_regex(r"[0-9]{1,9}", fullmatch=True),
    st.from_regex(r"[0-9]{1,9}\.[0-9]{0,6}", fullmatch=True),
    st.from_regex(r"\.[0-9]{1,6}", fullmatch=True),
)
signs = st.sampled_from(["", "+", "-"])
exponents = st.integers(min_value=-12, max_value=18).map(lambda e: st.sampled_from([f"e{e}", f"E{e}"]))


@st.composite
def quantities(draw) -> str:
    """Any well-formed quantity: sign, number, and a binary, decimal or exponent suffix."""
    suffix = draw(st.one_of(st.sampled_from(sorted(SUFFIXES)), exponents.flatmap(lambda s: s)))
    return draw(signs) + draw(numbers) + suffix


# ------------------------------------------------------------------ the parser
@given(quantities())
def test_every_well_formed_quantity_parses_to_the_kubernetes_clients_value(text):
    assert CRD_QUANTITY_PATTERN.match(text)
    with localcontext(prec=200):  # the client computes in Decimal: enough digits to be exact here
        expected = Fraction(client_parse_quantity(text))
    assert parse_quantity(text) == expected


@given(signs, numbers, st.sampled_from(sorted(SUFFIXES)))
def test_a_suffix_multiplies_the_number_exactly(sign, number, suffix):
    value = Fraction(Decimal(number)) * SUFFIXES[suffix]
    assert parse_quantity(f"{sign}{number}{suffix}") == (-value if sign == "-" else value)


@given(st.integers(min_value=-(10**21), max_value=10**21), st.integers(min_value=0, max_value=15))
def test_format_then_parse_round_trips_every_finite_decimal(mantissa, places):
    value = Fraction(mantissa, 10**places)
    text = format_quantity(value)
    assert CRD_QUANTITY_PATTERN.match(text), text
    assert parse_quantity(text) == value


@given(quantities())
def test_parse_then_format_then_parse_keeps_the_value(text):
    value = parse_quantity(text)
    assert parse_quantity(format_quantity(value)) == value


@pytest.mark.parametrize(
    "smaller,larger",
    [
        ("1G", "1Gi"),
        ("1M", "1Mi"),
        ("1k", "1Ki"),
        ("1E", "1Ei"),
        ("100m", "0.2"),
        ("1999m", "2"),
        ("1n", "1u"),
        ("1u", "1m"),
        ("999Mi", "1Gi"),
        ("1023Ki", "1Mi"),
        ("-1", "0"),
        ("2", "9"),
        ("1e2", "1Ki"),
    ],
)
def test_known_pairs_are_ordered(smaller, larger):
    assert parse_quantity(smaller) < parse_quantity(larger)


@pytest.mark.parametrize(
    "one,other",
    [
        ("1000m", "1"),
        ("1Ki", "1024"),
        ("0.5", "500m"),
        (".5", "500m"),
        ("1e3", "1k"),
        ("1E3", "1k"),
        ("1.5Gi", "1536Mi"),
        ("1e-3", "1m"),
        ("1.", "1"),
        ("+2", "2"),
        ("0", "-0"),
        ("1e0", "1"),
        ("2k", "2000"),
    ],
)
def test_known_pairs_are_equal(one, other):
    assert parse_quantity(one) == parse_quantity(other)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_same_suffix_orders_as_the_numbers(a, b):
    for suffix in SUFFIXES:
        assert (parse_quantity(f"{a}{suffix}") < parse_quantity(f"{b}{suffix}")) == (a < b)


@given(st.text(max_size=12))
def test_anything_outside_the_grammar_is_a_value_error(text):
    if CRD_QUANTITY_PATTERN.match(text) and "\n" not in text:
        return  # well formed: covered above
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    "text",
    [
        *("lots", "", " 1", "1 ", "1Kb", "1K", "1KI", "1i", "Ki", "1_000", "NaN", "Infinity", "1e3Mi", "1.5e1.5"),
        *("0x10", "1e", "e3", "--1", "1..2", "\u0661", "1e999999999"),  # \u0661: an Arabic-Indic digit one
    ],
)
def test_what_the_api_server_refuses_is_refused(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    "text,kind,says",
    [
        ("lots", "memory", "is not a Kubernetes quantity: 'lots'"),
        ("-1", "cpu", "must not be negative"),
        ("512m", "memory", "not a whole number of bytes"),
    ],
)
def test_check_quantity_names_the_key_in_one_line(text, kind, says):
    with pytest.raises(ParamsError) as err:
        check_quantity(text, "pipeline.resources.train.x", kind)
    assert says in str(err.value) and "'pipeline.resources.train.x'" in str(err.value)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["a", "petseg-work", "0", "a" * 63, "x1-2-y"])
def test_good_labels_pass(name):
    assert check_dns1123_label(name, "--namespace") == name
    assert check_dns1123_subdomain(name, "--pvc") == name


@pytest.mark.parametrize("name", ["Bad_PVC name", "", "-a", "a-", "UPPER", "a_b", "a" * 64, "a.b", "é"])
def test_bad_labels_are_refused_in_one_line(name):
    with pytest.raises(ParamsError, match=r"^--namespace .* is not a valid Kubernetes name") as err:
        check_dns1123_label(name, "--namespace")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["models.prod", "a" * 253, "a.b.c-d"])
def test_subdomains_take_dots_up_to_253(name):
    assert check_dns1123_subdomain(name, "--pvc") == name


@pytest.mark.parametrize("name", ["Bad_PVC name", "a..b", ".a", "a.", "a" * 254, "a.-b"])
def test_bad_subdomains_are_refused(name):
    with pytest.raises(ParamsError, match="is not a valid Kubernetes name"):
        check_dns1123_subdomain(name, "--pvc")


LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@given(st.text(alphabet="ab-_.Z0 ", max_size=70))
def test_label_check_agrees_with_the_rfc_1123_pattern(name):
    valid = bool(LABEL.fullmatch(name)) and len(name) <= 63
    try:
        check_dns1123_label(name, "x")
    except ParamsError:
        assert not valid
    else:
        assert valid


# ----------------------------------------------------------- at params load
PROJECT = load_params(REPO_ROOT / "params.yaml")
BAD_SETTINGS = [
    ({"pipeline.resources.train.memory_limit": "lots"}, "'pipeline.resources.train.memory_limit' is not a Kubernetes"),
    (
        {"pipeline.resources.train.cpu_request": "9", "pipeline.resources.train.cpu_limit": "2"},
        "'pipeline.resources.train.cpu_request' 9 is more than 'pipeline.resources.train.cpu_limit' 2",
    ),
    ({"pipeline.serving_pvc": "Bad_PVC name"}, "'pipeline.serving_pvc' 'Bad_PVC name' is not a valid Kubernetes name"),
    (
        {"pipeline.resources.push.memory_request": "5Gi", "pipeline.resources.push.memory_limit": "5G"},
        "'pipeline.resources.push.memory_request' 5Gi is more than 'pipeline.resources.push.memory_limit' 5G "
        "(5368709120 > 5000000000)",
    ),
    ({"pipeline.kserve.namespace": "Team A"}, "'pipeline.kserve.namespace' 'Team A' is not a valid Kubernetes name"),
    ({"pipeline.kserve.service_account": "sa_1"}, "'pipeline.kserve.service_account' 'sa_1' is not a valid"),
    (
        {"pipeline.kserve.resources.cpu_request": "3"},
        "'pipeline.kserve.resources.cpu_request' 3 is more than 'pipeline.kserve.resources.cpu_limit' 2",
    ),
    ({"pipeline.resources.deploy.memory_limit": "512m"}, "'pipeline.resources.deploy.memory_limit' '512m' is not a"),
]


@pytest.mark.parametrize("overrides,says", BAD_SETTINGS)
def test_bad_cluster_settings_are_refused_when_params_load(overrides, says):
    with pytest.raises(ParamsError) as err:
        with_overrides(PROJECT, overrides)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_kserve_deploy_step_gets_the_same_check():
    """deploy_kserve rebuilds `pipeline` with section_params: a bad KServe setting fails it the same way."""
    raw = params_to_dict(PROJECT.pipeline)
    raw["kserve"]["resources"]["memory_request"] = "8Gi"
    with pytest.raises(ParamsError, match=r"'pipeline\.kserve\.resources\.memory_request' 8Gi is more than"):
        section_params("pipeline", raw)


def test_a_yaml_number_is_a_quantity_as_kubernetes_takes_it():
    params = with_overrides(
        PROJECT, {"pipeline.resources.train.cpu_limit": 8, "pipeline.resources.train.cpu_request": 0.5}
    )
    assert (params.pipeline.resources.train.cpu_request, params.pipeline.resources.train.cpu_limit) == ("0.5", "8")
    with pytest.raises(ParamsError, match=r"'pipeline\.resources\.train\.cpu_limit' must be a string, got True"):
        with_overrides(PROJECT, {"pipeline.resources.train.cpu_limit": True})


def test_project_params_pass():
    assert with_overrides(PROJECT, {"pipeline.serving_pvc": "petseg-models"}).pipeline.serving_pvc == "petseg-models"


# ------------------------------------------------------- the CLI writes nothing
def _cli_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def _overrides_as_flags(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("--param", f"{key}={value}")]


DONE_WHEN = BAD_SETTINGS[:3]  # the three: `lots`, a request over its limit, `Bad_PVC name`


@pytest.mark.parametrize("command", [["compile"], ["tfjob", "--pvc", "petseg-work"]])
@pytest.mark.parametrize("overrides,says", DONE_WHEN)
def test_compile_and_tfjob_refuse_in_one_line_and_leave_the_output_alone(tmp_path, capsys, command, overrides, says):
    out = tmp_path / "out.yaml"
    out.write_text("the user's file\n")
    code = main(
        [
            "pipeline",
            *command,
            "-o",
            str(out),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            *_overrides_as_flags(overrides),
        ]
    )
    assert code == 2 and says in _cli_line(capsys)
    assert out.read_text() == "the user's file\n" and [p.name for p in tmp_path.iterdir()] == ["out.yaml"]


@pytest.mark.parametrize("command", [["compile"], ["tfjob", "--pvc", "petseg-work"]])
@pytest.mark.parametrize("overrides,says", DONE_WHEN)
def test_the_same_settings_in_a_params_file_are_refused(tmp_path, capsys, command, overrides, says):
    raw = params_to_dict(PROJECT)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out.yaml"
    code = main(["pipeline", *command, "-o", str(out), "--params", str(params_file)])
    assert code == 2 and says in _cli_line(capsys) and not out.exists()


@pytest.mark.parametrize(
    "flags,says",
    [
        (["--pvc", "Bad_PVC name"], "--pvc (the PersistentVolumeClaim every worker mounts) 'Bad_PVC name' is not a"),
        (["--pvc", ""], "--pvc (the PersistentVolumeClaim every worker mounts) '' is not a valid Kubernetes name"),
        (["--pvc", "work", "--namespace", "Team_A"], "--namespace 'Team_A' is not a valid Kubernetes name"),
    ],
)
def test_tfjob_checks_its_name_flags(tmp_path, capsys, flags, says):
    out = tmp_path / "tfjob.yaml"
    code = main(["pipeline", "tfjob", *flags, "-o", str(out), "--params", str(REPO_ROOT / "params.yaml")])
    assert code == 2 and says in _cli_line(capsys) and not out.exists()


def test_submit_checks_its_namespace_before_contacting_the_cluster(capsys):
    code = main(
        [
            *("pipeline", "submit", "--host", "http://127.0.0.1:9", "--namespace", "Team A"),
            *("--params", str(REPO_ROOT / "params.yaml"), "--param", "push.model_base_path=s3://b/m"),
        ]
    )
    assert code == 2 and "--namespace 'Team A' is not a valid Kubernetes name" in _cli_line(capsys)
