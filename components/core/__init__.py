"""Core: what every layer above shares and nothing below it imports.

Errors (one line for a user's mistake), file plumbing (atomic writes, folder checks),
progress bars, the typed parameters parsed from params.yaml, and the code fingerprint.
Imports nothing else of petseg.
"""
