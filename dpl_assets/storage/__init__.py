"""Persistence: atomic writes, per-format codecs, the artefact store and the IO manager."""
