"""Visual checks of the pipeline's outputs, as plain functions (no Dagster code).

- :mod:`~dpl_assets.visualize.overlay`: one frame with its face box, 68 landmarks and
  head-pose axes drawn on it; :class:`~dpl_assets.visualize.overlay.Overlays` holds the
  per-frame arrays of a clip.
- :mod:`~dpl_assets.visualize.preview`: an H.264 + AAC preview mp4 of a clip with its
  overlays and 16 kHz audio, streamed through one ffmpeg process.
- :mod:`~dpl_assets.visualize.contact_sheet`: a grid of evenly spaced frames as one image.
- :mod:`~dpl_assets.visualize.summary`: dataset-level plots (durations, face coverage,
  rejection reasons, feature statistics) and a markdown digest of ``report.json``.

Every file is written atomically (a temp name renamed into place once complete).
"""
