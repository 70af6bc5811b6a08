"""Packing: per-video artefacts -> training files (one HDF5 per video, sharded dataset packs).

``layouts`` stores image sequences inside HDF5 (plugin-free variable-length entries, or the
original tool's JPEG filter 32019 layout), ``resample`` puts audio features on video frames,
``video_pack`` writes one file per video, ``dataset_pack`` gathers them into appendable
shards, and ``reader`` serves fixed-length windows to PyTorch.
"""
