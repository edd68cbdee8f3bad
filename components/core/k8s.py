"""Kubernetes values checked before any manifest or pipeline is written: quantities and DNS-1123 names.

One validator for every generator that turns params into Kubernetes objects
(`pipeline compile`, `pipeline tfjob`, the Trainer v2 generator, the KServe
deploy): params.py calls it when params.yaml loads, and the CLI calls the name
checks on flags (`--pvc`, `--namespace`). A value the API server would refuse
at run time is refused here, in one line naming the key, before anything is written.

Quantities follow `resource.Quantity` (kubernetes/apimachinery,
pkg/api/resource/quantity.go, tag v0.36.3):

    <quantity>        ::= <signedNumber><suffix>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E   (n and u: suffix.go)
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>

written as the regular expression CRDs carry for quantity fields (controller-gen's
`pattern`, e.g. in tests/data/crds). Values are exact fractions, never floats,
so `1Gi` > `1G` and `1000m` == `1` compare as Kubernetes compares them.

Why not kubernetes.utils.parse_quantity (the Python client, installed with kfp):
it hands the number to Decimal, so it accepts what the API server refuses
("NaN", "1_000", " 1 ", "1e3Mi"), and importing it costs about 0.4 s on
every command that loads params.

Names follow k8s.io/apimachinery/pkg/util/validation/validation.go (v0.36.3):
an RFC 1123 label (namespaces; at most 63 characters) and an RFC 1123
subdomain (PersistentVolumeClaims, ConfigMaps, service accounts; at most 253).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from petseg.components.core.errors import ParamsError

QuantityKind = Literal["cpu", "memory"]

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(
    rf"(?P<sign>[+-])?(?P<number>{_NUMBER})"
    rf"(?:(?P<binary>[KMGTPE]i)|(?P<decimal>[numkMGTPE])|[eE](?P<exponent>[+-]?{_NUMBER}))?"
)
# The exponent is an integer in Kubernetes (suffix.go parses it with strconv.ParseInt); the
# CRD pattern admits a fraction there, which the API server then refuses.
_INTEGER_EXPONENT = re.compile(r"[+-]?[0-9]+")
_BINARY_POWERS = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_POWERS = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Far past any real request: bounds the work a hostile exponent ("1e999999999") can cause.
_MAX_EXPONENT = 100

_EXAMPLES: dict[QuantityKind, str] = {
    "cpu": '"500m" or "2" CPUs',
    "memory": '"512Mi" or "4Gi" bytes',
}

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity ("500m" -> 1/2, "1Ki" -> 1024); ValueError if it is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number = Fraction(match["number"] + ("0" if match["number"].endswith(".") else ""))
    if match["binary"]:
        value = number * 2 ** _BINARY_POWERS[match["binary"]]
    else:
        power = _DECIMAL_POWERS.get(match["decimal"] or "", 0)
        if match["exponent"] is not None:
            if not _INTEGER_EXPONENT.fullmatch(match["exponent"]):
                raise ValueError(f"{text!r}: the exponent must be a whole number")
            power = int(match["exponent"])
            if abs(power) > _MAX_EXPONENT:
                raise ValueError(f"{text!r}: exponent out of range")
        value = number * Fraction(10) ** power
    return -value if match["sign"] == "-" else value


def format_quantity(value: Fraction) -> str:
    """`value` written as a Kubernetes quantity with the largest decimal suffix that keeps it whole.

    The inverse of parse_quantity for every value it returns (they are all finite
    decimals): 2000 -> "2k", 1/2 -> "500m", 2**30 -> "1073741824". Used to show
    two quantities written with different suffixes in one unit.
    """
    sign, value = ("-", -value) if value < 0 else ("", value)
    if value == 0:
        return "0"
    if value.denominator == 1:
        whole = value.numerator
        for suffix in ("E", "P", "T", "G", "M", "k"):
            scale = 10 ** _DECIMAL_POWERS[suffix]
            if whole % scale == 0:
                return f"{sign}{whole // scale}{suffix}"
        return f"{sign}{whole}"
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
        if places > 2 * _MAX_EXPONENT:
            raise ValueError(f"{value} has no finite decimal form")
    for suffix in ("m", "u", "n"):
        if places <= -_DECIMAL_POWERS[suffix]:
            return f"{sign}{value * 10 ** -_DECIMAL_POWERS[suffix]}{suffix}"
    return f"{sign}{value * 10**places}e-{places}"


def check_quantity(text: str, key: str, kind: QuantityKind) -> Fraction:
    """The value of quantity `text` set at `key`, or ParamsError in one line saying what to write.

    Beyond the grammar: a negative request or limit is refused (Kubernetes'
    ValidateNonnegativeQuantity), and so is memory that is not a whole number of
    bytes ("512m" is 0.512 bytes: the API server warns that a fractional byte
    value is invalid; the writer almost always meant 512Mi).
    """
    try:
        value = parse_quantity(text)
    except ValueError:
        raise ParamsError(f"'{key}' is not a Kubernetes quantity: {text!r} (e.g. {_EXAMPLES[kind]})") from None
    if value < 0:
        raise ParamsError(f"'{key}' must not be negative; got {text!r}")
    if kind == "memory" and value.denominator != 1:
        raise ParamsError(
            f"'{key}' {text!r} is not a whole number of bytes (m is milli: write Mi for mebibytes, e.g. \"512Mi\")"
        )
    return value


def check_request_within_limit(request: str, limit: str, request_key: str, limit_key: str, kind: QuantityKind) -> None:
    """ParamsError when a request exceeds its limit, which the API server refuses (request must be <= limit)."""
    low, high = check_quantity(request, request_key, kind), check_quantity(limit, limit_key, kind)
    if low > high:
        same_unit = f" ({_plain(low)} > {_plain(high)})" if _suffix(request) != _suffix(limit) else ""
        raise ParamsError(
            f"'{request_key}' {request} is more than '{limit_key}' {limit}{same_unit}; "
            "Kubernetes requires request <= limit"
        )


def _plain(value: Fraction) -> str:
    """A whole value as digits (2Gi -> 2147483648), a fractional one as a quantity (1/2 -> 500m)."""
    return str(value.numerator) if value.denominator == 1 else format_quantity(value)


def _suffix(text: str) -> str:
    """The suffix a quantity is written with ("Gi", "m", "e3" or "")."""
    return text.lstrip("+-").lstrip("0123456789.")


def check_dns1123_label(value: str, what: str) -> str:
    """`value` if it is an RFC 1123 label (a namespace name), else ParamsError naming `what`."""
    if len(value) > DNS1123_LABEL_MAX or not _DNS1123_LABEL.fullmatch(value):
        raise ParamsError(
            f"{what} {value!r} is not a valid Kubernetes name: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {DNS1123_LABEL_MAX} characters"
        )
    return value


def check_dns1123_subdomain(value: str, what: str) -> str:
    """`value` if it is an RFC 1123 subdomain (a PVC, ConfigMap or service account name), else ParamsError."""
    if len(value) > DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(value):
        raise ParamsError(
            f"{what} {value!r} is not a valid Kubernetes name: lower-case letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit, at most {DNS1123_SUBDOMAIN_MAX} characters"
        )
    return value
