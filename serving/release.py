"""Which TF Serving release serves the pushed models: read from the deployment files, for the model card.

MERGE NOTE (issue 22): the TF Serving release is becoming one setting. When it
lands, point `tf_serving_release()` at that setting and drop the YAML reading
below; its callers (`petseg push`, the pipeline's compile) pass the string on
and need no change.
"""

from __future__ import annotations

from pathlib import Path

import yaml

# The Kubernetes Deployment of TF Serving (serving/deploy/k8s/deployment.yaml), found beside this module.
DEPLOYMENT_FILE = Path(__file__).resolve().parent / "deploy" / "k8s" / "deployment.yaml"
SERVING_IMAGE = "tensorflow/serving"


def tf_serving_release(deployment_file: Path = DEPLOYMENT_FILE) -> str | None:
    """The tensorflow/serving image tag (e.g. "2.20.0") the deployment runs; None when it cannot be read.

    None when the file is absent (an installed wheel ships no deployment
    files), unreadable, or runs no tensorflow/serving image: the card then
    says the release was not given.
    """
    try:
        documents = list(yaml.safe_load_all(deployment_file.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    for doc in documents:
        for container in _containers(doc):
            name, _, tag = str(container.get("image") or "").partition(":")
            if name.endswith(SERVING_IMAGE) and tag:
                return tag.split("@", 1)[0]
    return None


def _containers(doc: object) -> list[dict]:
    """The containers of a Deployment-like document (spec.template.spec.containers); [] for anything else."""
    node: object = doc
    for key in ("spec", "template", "spec", "containers"):
        node = node.get(key) if isinstance(node, dict) else None
    return [c for c in node if isinstance(c, dict)] if isinstance(node, list) else []
