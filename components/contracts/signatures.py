"""What the exported SavedModel promises to evaluate, push, serving and clients.

The SavedModel is served by TF Serving from `<model_base_path>/<model_name>/<version>/`.
Signatures:

- `serving_default`: input `images` uint8 [N, H, W, 3], any H and W.
  Outputs `mask` uint8 [N, H, W] (class ids, at the input size) and
  `probabilities` float32 [N, H, W, 3].
- `serving_bytes`: input `image_bytes` string [N], encoded JPEG or PNG, all of
  one size within a request. Same outputs.

Resizing to the model's input size and normalisation happen inside the graph,
so a client sends plain photos. Class names travel with the model in
`assets.extra/class_names.txt` (one per line, class id order).
"""

from petseg.components.contracts.records import CLASS_NAMES

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
SIGNATURES = (SIGNATURE_IMAGES, SIGNATURE_BYTES)  # both are the contract: push and rollback require them
INPUT_IMAGES = "images"
INPUT_BYTES = "image_bytes"
OUTPUT_MASK = "mask"
OUTPUT_PROBABILITIES = "probabilities"
CLASS_NAMES_FILE = "assets.extra/class_names.txt"

__all__ = [
    "CLASS_NAMES",
    "CLASS_NAMES_FILE",
    "INPUT_BYTES",
    "INPUT_IMAGES",
    "OUTPUT_MASK",
    "OUTPUT_PROBABILITIES",
    "SIGNATURES",
    "SIGNATURE_BYTES",
    "SIGNATURE_IMAGES",
]
