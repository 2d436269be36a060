"""Batch jobs: many edits from a manifest, in this process or on Ray (``laspa batch``)."""
