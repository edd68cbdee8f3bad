"""The model store's credentials on the pipeline's tasks: kfp-kubernetes' own calls, from pipeline.object_store.

Only the steps that touch the store get them (pipeline.STORE_STEPS); the
environment is the one contracts/object_store.py defines, so the step's own
check (components/store/credentials.py) can name the Secret a value comes from.
"""

from __future__ import annotations

from typing import Any

from petseg.components.contracts.object_store import store_env
from petseg.components.core.params import ObjectStoreParams


def give_store_credentials(task: Any, settings: ObjectStoreParams) -> None:
    """Secret keys as environment variables, a GCS key file Secret as a volume, and the plain variables."""
    from kfp import kubernetes

    env = store_env(settings)
    by_secret: dict[str, dict[str, str]] = {}
    for name, ref in env.from_secrets.items():
        by_secret.setdefault(ref.secret, {})[ref.key] = name
    for secret, key_to_env in by_secret.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=key_to_env)
    for secret, mount_path in env.mounts.items():
        kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=mount_path)
    for name, value in env.values.items():
        task.set_env_variable(name, value)
