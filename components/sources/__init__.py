"""Data sources download reads besides TFDS: the official annotation lists and the synthetic set."""
