"""The names of validate's expectations: the one list that params.yaml, the suite and the docs read.

Each expectation of the Great Expectations suite carries one of these names in its
`meta`, and `validate.critical` in params.yaml picks by name which of them stop the
pipeline (the others only warn). The suite (components/checks/suite.py) builds one
expectation per name here; params checks `validate.critical` against these names.

The no_drift_* expectations run only against a reference (an earlier accepted
validation's report): each compares the distribution of the table columns it names
with the reference's by KL divergence, under the DriftParams threshold it names.
"""

from __future__ import annotations

from collections.abc import Iterable

from petseg.components.core.errors import ParamsError

# name -> what it checks (one line, shown in the suite's descriptions and in docs/)
EXPECTATIONS: dict[str, str] = {
    "ids_unique": "every id appears once",
    "split_is_known": "split is `trainval` or `test`",
    "image_decodes": "the image file exists and decodes fully (a truncated JPEG does not)",
    "mask_decodes": "the trimap file exists and decodes fully",
    "image_is_rgb": "the image has 3 channels",
    "image_is_jpeg": "the image bytes are a JPEG (the raw layout names them .jpg)",
    "mask_is_single_channel": "the trimap is one channel",
    "mask_size_matches_image": "trimap height x width equals the image's",
    "mask_values_in_trimap_set": "trimap values are only 1 pet, 2 background, 3 border",
    "train_count_in_bounds": "number of `trainval` examples within the params bounds",
    "test_count_in_bounds": "number of `test` examples within the params bounds",
    "no_train_test_leakage": "no id and no image content appears in both splits",
    "pet_fraction_in_range": "pet pixel fraction within [min_pet_fraction, max_pet_fraction]",
    "border_fraction_in_range": "border pixel fraction at most max_border_fraction",
    "no_drift_image_size": "image_height and image_width against the reference",
    "no_drift_brightness": "per-image mean luma (0.299 R + 0.587 G + 0.114 B) against the reference",
    "no_drift_colour": "each channel's share of the mean colour against the reference",
    "no_drift_class_balance": "breed (class_id) fractions against the reference",
    "no_drift_pet_area": "per-image pet pixel fraction against the reference",
    "no_drift_border_area": "per-image border pixel fraction against the reference",
}
EXPECTATION_NAMES = tuple(EXPECTATIONS)

# no_drift_* name -> (the table columns compared, the DriftParams threshold field)
DRIFT_CHECKS: dict[str, tuple[tuple[str, ...], str]] = {
    "no_drift_image_size": (("image_height", "image_width"), "max_kl_image_size"),
    "no_drift_brightness": (("brightness",), "max_kl_brightness"),
    "no_drift_colour": (("red_share", "green_share", "blue_share"), "max_kl_colour"),
    "no_drift_class_balance": (("class_id",), "max_kl_class_balance"),
    "no_drift_pet_area": (("pet_fraction",), "max_kl_pet_area"),
    "no_drift_border_area": (("border_fraction",), "max_kl_border_area"),
}
DRIFT_NAMES = tuple(DRIFT_CHECKS)
CATEGORICAL_DRIFT_COLUMNS = ("class_id",)  # compared as class fractions, not binned

# Those that stop the pipeline unless params.yaml says otherwise: every check that the data
# is well formed, and drift. The image format and the class fractions only warn.
WARNING_BY_DEFAULT = ("image_is_jpeg", "pet_fraction_in_range", "border_fraction_in_range")
DEFAULT_CRITICAL = tuple(name for name in EXPECTATION_NAMES if name not in WARNING_BY_DEFAULT)


def check_critical_names(critical: Iterable[str]) -> None:
    """ParamsError naming the first entry of validate.critical that is not an expectation of the suite."""
    for name in critical:
        if name not in EXPECTATIONS:
            raise ParamsError(
                f"'validate.critical' names unknown expectation {name!r} (known: {', '.join(EXPECTATION_NAMES)})"
            )
