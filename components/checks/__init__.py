"""validate's parts: the per-example scan, the Great Expectations suite and the drift checks."""
