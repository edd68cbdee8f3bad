"""What the exported SavedModel promises to evaluate, push, serving and clients.

The SavedModel is served by TF Serving from `<model_base_path>/<model_name>/<version>/`.
Signatures:

- `serving_default`: input `images` uint8 [N, H, W, 3], any H and W.
  Outputs `mask` uint8 [N, H, W] (class ids, at the input size) and
  `probabilities` float32 [N, H, W, 3].
- `serving_bytes`: input `image_bytes` string [N], encoded JPEG or PNG, all of
  one size within a request. Same outputs.
- `serving_png`: the signature for apps on REST. Input `image_bytes` as for
  `serving_bytes`; one output, `mask_png_bytes` string [N]: each mask (equal,
  pixel for pixel, to `serving_bytes`' `mask`) encoded as an 8-bit greyscale
  PNG whose pixel values are the class ids. TF Serving's REST API writes a
  string output as {"b64": ...} only when its alias ends in `_bytes`
  (tensorflow_serving/util/json_tensor.cc IsNamedTensorBytes), and returns
  every output of a signature (REST has no output_filter), so this signature
  has that one output and an answer is a few kilobytes of base64, not the
  megabytes of numbers-as-text the other two give over REST.

All three are the contract: push writes and infra-validates only models that
have them, and rollback refuses a version without one (a version pushed before
`serving_png` existed included: its REST clients would get 400s from it).

Resizing to the model's input size and normalisation happen inside the graph,
so a client sends plain photos. Class names travel with the model in
`assets.extra/class_names.txt` (one per line, class id order).
"""

from petseg.components.contracts.records import CLASS_NAMES

SIGNATURE_IMAGES = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
SIGNATURE_PNG = "serving_png"
SIGNATURES = (SIGNATURE_IMAGES, SIGNATURE_BYTES, SIGNATURE_PNG)  # the contract: push and rollback require all
INPUT_IMAGES = "images"
INPUT_BYTES = "image_bytes"  # the input of serving_bytes and serving_png
OUTPUT_MASK = "mask"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_MASK_PNG = "mask_png_bytes"  # the "_bytes" suffix makes TF Serving's REST API send it as {"b64": ...}
BYTES_SUFFIX = "_bytes"  # json_tensor.cc kBytesTensorNameSuffix
CLASS_NAMES_FILE = "assets.extra/class_names.txt"

__all__ = [
    "BYTES_SUFFIX",
    "CLASS_NAMES",
    "CLASS_NAMES_FILE",
    "INPUT_BYTES",
    "INPUT_IMAGES",
    "OUTPUT_MASK",
    "OUTPUT_MASK_PNG",
    "OUTPUT_PROBABILITIES",
    "SIGNATURES",
    "SIGNATURE_BYTES",
    "SIGNATURE_IMAGES",
    "SIGNATURE_PNG",
]
