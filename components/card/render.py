"""The card's three files from one ModelCard: HTML (self-contained), Markdown and JSON.

Jinja2 templates (components/card/templates/, shipped as package data) with
autoescaping for the HTML page and StrictUndefined, so a template that names a
fact the card does not have fails loudly instead of leaving a blank. The HTML
page carries its pictures as data: URIs and a Content-Security-Policy that
allows nothing else (no network, no script): it opens the same from a bucket,
an email attachment or the Kubeflow UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2

from petseg.components.card.model_card import ModelCard
from petseg.components.card.pictures import Picture
from petseg.components.contracts.layout import MODEL_CARD_HTML, MODEL_CARD_JSON, MODEL_CARD_MARKDOWN

# What the page may load: its own inline styles and data: images; nothing else (no script, no fetch).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class CardPictures:
    training_curves: Picture
    confusion_matrix: Picture
    sample_predictions: Picture


def card_files(card: ModelCard, pictures: CardPictures) -> dict[str, bytes]:
    """{file name: content} of the card's three forms (layout.MODEL_CARD_FILES)."""
    return {
        MODEL_CARD_HTML: render_html(card, pictures).encode("utf-8"),
        MODEL_CARD_MARKDOWN: render_markdown(card, pictures).encode("utf-8"),
        MODEL_CARD_JSON: card.to_text().encode("utf-8"),
    }


def render_html(card: ModelCard, pictures: CardPictures) -> str:
    return (
        _environment(html=True)
        .get_template("model_card.html.j2")
        .render(card=card, pictures=pictures, csp=CONTENT_SECURITY_POLICY)
    )


def render_markdown(card: ModelCard, pictures: CardPictures) -> str:
    return _environment(html=False).get_template("model_card.md.j2").render(card=card, pictures=pictures)


@cache
def _environment(html: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("petseg.components.card", "templates"),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=number, delta=delta, count=count, text=text, shape=shape, cell=markdown_cell, oneline=one_line
    )
    return env


# -------------------------------------------------------------- the filters
def number(value: Any, digits: int = 4) -> str:
    """A metric with `digits` decimals; the words NOT_RECORDED for None."""
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def delta(value: float | None, digits: int = 4) -> str:
    """A signed difference (+0.0123 / -0.0040); NOT_RECORDED for None."""
    return NOT_RECORDED if value is None else f"{value:+.{digits}f}"


def count(value: int | None) -> str:
    """An integer with thousands separators."""
    return NOT_RECORDED if value is None else f"{value:,}"


def text(value: Any) -> str:
    """Any fact as words: None is NOT_RECORDED, booleans yes/no, lists comma-separated, "" is "none"."""
    if value is None:
        return NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value) or "none"
    return str(value) if str(value) != "" else "none"


def shape(value: list[int | None] | None) -> str:
    """[None, None, 3] as "[N, ?, 3]": N for the batch, ? for any size."""
    if value is None:
        return "any shape"
    dims = ["?" if d is None else str(d) for d in value]
    if dims and dims[0] == "?":
        dims[0] = "N"
    return "[" + ", ".join(dims) + "]"


def markdown_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (no pipe or line break breaks the row)."""
    return text(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def one_line(value: Any) -> str:
    """The user's words on one line (Markdown): a newline in params.yaml must not start a heading or a list."""
    return " ".join(text(value).split())
