"""The TF Serving release every serving path runs, decided here once.

Three paths serve the model with the official `tensorflow/serving` image:
docker compose (serving/deploy/docker-compose.yaml), the Kubernetes
Deployment (serving/deploy/k8s/deployment.yaml), and KServe's TensorFlow
runtime, whose stock image tag is 2.6.2 (kserve/kserve v0.20.0
config/runtimes/kustomization.yaml) unless the InferenceService sets
`spec.predictor.model.runtimeVersion` (pkg/apis/serving/v1beta1/predictor.go;
applied by `UpdateImageTag` in pkg/controller/v1beta1/inferenceservice/utils/utils.go).
components/deploy.py writes TF_SERVING_VERSION as that runtimeVersion; the two
YAML files carry the same tag, and tests/test_deploy.py fails when any of them
differs from TF_SERVING_VERSION, or when its major.minor differs from the
TensorFlow that exports the model (a TF 2.21 / Keras 3 SavedModel needs a
server built on TF 2.21).
"""

from __future__ import annotations

TF_SERVING_IMAGE = "tensorflow/serving"
# TF Serving's release numbers follow TensorFlow's: 2.21.x is built on TF 2.21, the TF this project exports with.
TF_SERVING_VERSION = "2.21.0"


def tf_serving_image(version: str = TF_SERVING_VERSION) -> str:
    """The image reference for a release: `tensorflow/serving:<version>`."""
    return f"{TF_SERVING_IMAGE}:{version}"
