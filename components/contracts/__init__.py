"""Contracts: what two steps (or a step and the server) agree on, and nothing else.

The raw dataset layout, the TFRecord record, the run folders, the serving signatures,
the records manifest, the validation summary, the blessing and the lineage record.
A step that writes one and a step that reads it both import it from here; no step
imports another step. Imports only petseg.components.core.
"""
