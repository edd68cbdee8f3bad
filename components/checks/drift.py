"""validate's drift checks: this data's statistics against an accepted validation's (the reference).

The reference is a report folder (local or an object-store URI) of an earlier
accepted `petseg validate`. Each no_drift_* expectation (core/expectations.py) is a
Great Expectations ExpectColumnKLDivergenceToBeLessThan whose partition is built from
the reference's column: validate.drift.bins bins over its range plus two open tails,
smoothed, or the breeds' own fractions for class_id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from petseg.components.contracts.validation import (
    DRIFT_REFERENCE_FILES,
    TABLE_FILE,
    require_drift_reference,
)
from petseg.components.core.errors import PetsegError, stable_text
from petseg.components.core.expectations import CATEGORICAL_DRIFT_COLUMNS, DRIFT_CHECKS
from petseg.components.core.params import DriftParams
from petseg.components.store import storage


def read_reference(reference: str) -> tuple[pd.DataFrame, str]:
    """The per-example table of an accepted validation (local folder or URI), and its data's fingerprint.

    Raises PetsegError (one line) when the folder is not such a report: no
    summary or table, a validation that failed, or a table from before the
    columns the drift checks compare.
    """
    what = f"--reference {reference}"
    with storage.local_copy(reference, only=DRIFT_REFERENCE_FILES) as local:
        summary = require_drift_reference(local, what, shown_as=reference)
        try:
            table = pd.read_csv(Path(local) / TABLE_FILE)
        except (OSError, ValueError) as exc:
            raise PetsegError(
                f"{what}: cannot read {TABLE_FILE} ({stable_text(exc)}); pass the "
                "report folder of an accepted `petseg validate`"
            ) from None
    missing = [c for names, _ in DRIFT_CHECKS.values() for c in names if c not in table.columns]
    if missing:
        raise PetsegError(
            f"{what}: {TABLE_FILE} has no {', '.join(missing)} column (written "
            "by an older petseg); run `petseg validate` on the reference data again"
        )
    return table, summary.fingerprint


def drift_partition(reference: pd.Series, column: str, drift: DriftParams) -> dict:
    """GX's partition_object for `column` built from the reference's values.

    class_id: the breeds' fractions ({"values", "weights"}). Otherwise
    drift.bins equal bins over the reference's range with an open bin at each end
    ({"bins": [-inf, ..., inf], "weights"}); every bin gets drift.smoothing
    pseudo-counts, so a value where the reference has none gives a finite divergence.
    """
    values = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype=float)
    if values.size == 0:
        raise PetsegError(f"--reference: {TABLE_FILE} has no value in column {column}; it cannot be a reference")
    if column in CATEGORICAL_DRIFT_COLUMNS:
        classes, class_counts = np.unique(values.astype(int), return_counts=True)
        return {"values": classes.tolist(), "weights": (class_counts / class_counts.sum()).tolist()}
    low, high = float(values.min()), float(values.max())
    if high <= low:  # one value: a bin around it
        low, high = low - 0.5, high + 0.5
    # GX counts [edge, next edge), numpy closes its last bin: lift the top edge so the maximum is inside for both.
    inner = np.linspace(low, np.nextafter(high, np.inf), drift.bins + 1)
    inside, _ = np.histogram(values, bins=inner)
    counts = np.concatenate(([0], inside, [0])).astype(float) + drift.smoothing
    return {"bins": [-np.inf, *inner.tolist(), np.inf], "weights": (counts / counts.sum()).tolist()}


def drift_expectations(reference: pd.DataFrame, drift: DriftParams, named) -> list:
    """One ExpectColumnKLDivergenceToBeLessThan per compared column, its partition from the reference."""
    import great_expectations.expectations as gxe

    expectations = []
    for name, (columns, threshold_field) in DRIFT_CHECKS.items():
        threshold = getattr(drift, threshold_field)
        for column in columns:
            categorical = column in CATEGORICAL_DRIFT_COLUMNS
            expectations.append(
                named(
                    name,
                    gxe.ExpectColumnKLDivergenceToBeLessThan,
                    f"KL divergence of {column} from the reference at most {threshold} "
                    f"(validate.drift.{threshold_field})",
                    column=column,
                    partition_object=drift_partition(reference[column], column, drift),
                    threshold=threshold,
                    tail_weight_holdout=drift.new_class_weight if categorical else 0.0,
                    bucketize_data=not categorical,
                )
            )
    return expectations
