"""Step: the drift reference, the accepted validation report that this run's data is compared with.

validate.drift.reference (or `--reference`) is "", a report folder or URI, or "served":
the report push kept beside the version the model store serves, i.e. the data the
served model was trained on. This step resolves that choice through the model store,
so validate itself never reads serving state. On Kubeflow it is a step of its own,
never cached, because the served version changes between runs.
"""

from __future__ import annotations

from petseg.components.core.errors import PetsegError, stable_text
from petseg.components.core.params import SERVED_REFERENCE
from petseg.components.store.credentials import require_store_access
from petseg.components.store.model_store import ModelStore


def drift_reference(choice: str, store: ModelStore) -> str | None:
    """The report folder the no_drift_* expectations compare with, or None for no drift check.

    `choice` is `--reference` or validate.drift.reference: "" (none), a report
    folder or object-store URI, or "served": the report push kept with the
    version `store` serves (the data the served
    model was trained on). Nothing served yet, or a version pushed without a
    report, means no drift check; a line says which.
    """
    if choice != SERVED_REFERENCE:
        return choice or None
    where = store.root
    require_store_access(where)
    try:
        version, folder = store.served_drift_reference()
    except OSError as exc:
        raise PetsegError(
            f"cannot read which version is served at {where} ({stable_text(exc)}), the drift reference "
            'validate.drift.reference "served" asks for; fix access to the store, or pass --reference '
            'with a report folder ("" for none)'
        ) from None
    if version is None:
        print(f"validate: no version served at {where} yet: no drift check", flush=True)
    elif folder is None:
        print(
            f"validate: served version {version} at {where} has no drift reference (pushed without its "
            "validation report): no drift check",
            flush=True,
        )
    else:
        print(f"validate: drift reference: the data served version {version} was trained on ({folder})", flush=True)
    return folder
