"""Shared core: safe image I/O, detection/alignment, embedders, datasets, metrics, keys, reports."""
