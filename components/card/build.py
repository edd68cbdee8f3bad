"""One call from push: the card files of a model, from its record, blessing, SavedModel and the run's artifacts."""

from __future__ import annotations

from pathlib import Path

from petseg.components.card.model_card import ModelCard, PushStatus, build_card
from petseg.components.card.pictures import confusion_picture, curves_picture, samples_picture
from petseg.components.card.render import CardPictures, card_files
from petseg.components.card.sources import CardSources, read_curves, read_savedmodel
from petseg.components.contracts.blessing import Blessing
from petseg.components.contracts.lineage import VersionRecord


def model_card(
    record: VersionRecord,
    blessing: Blessing,
    model_dir: Path,
    sources: CardSources,
    status: PushStatus,
    status_reason: str,
) -> tuple[ModelCard, dict[str, bytes]]:
    """The card of the model at `model_dir` and its files {model_card.html, .md, .json: bytes}."""
    model = read_savedmodel(Path(model_dir))
    curves = read_curves(sources.live_dir)
    card = build_card(
        record,
        blessing,
        model.value,
        sources,
        status,
        status_reason,
        missing=tuple(m for m in (model.missing, curves.missing) if m),
    )
    pictures = CardPictures(
        training_curves=curves_picture(curves.value, curves.missing),
        confusion_matrix=confusion_picture(sources.evaluation_dir),
        sample_predictions=samples_picture(sources.evaluation_dir),
    )
    return card, card_files(card, pictures)
