"""The model card: what a reviewer reads before approving a pushed version (push writes it).

A building block, like checks/ or ml/: push (a step) imports it, it imports
only contracts and core. It reads each fact from the artifact that owns it
(evaluate's metrics.json, blessing.json and plots, validate's summary.json,
the records manifest, train's metrics.json and DVCLive curves, the SavedModel,
the lineage record) and renders the same facts three ways: a self-contained
HTML page, Markdown and JSON with a schema version. See docs/model-card.md.
"""
