"""DECA's orthographic camera and the projected-space -> pixel mapping.

Coordinate conventions (the same as DECA/EMOCA, so their ``cam`` applies as is):

- **Model space** (FLAME): x to the subject's left = image right, y up, z out of the face
  towards the camera. The camera looks along -z, so of two surfaces the one with the larger
  z is in front.
- **Projected space** (:func:`orthographic_project`): ``xy = scale * (xy + [tx, ty])`` and
  ``z = scale * z`` (DECA scales z too; with ``scale > 0`` depth order is unchanged). x and
  y are normalised device coordinates (NDC): x = -1 is the left image edge and +1 the right
  edge, y = +1 the top edge and -1 the bottom edge (y up, image rows down).
- **Pixels**: pixel (row i, column j) is the square ``[j, j + 1] x [i, i + 1]`` in continuous
  pixel coordinates and is sampled at its centre, i.e. at NDC
  ``x = (2 j + 1) / W - 1``, ``y = 1 - (2 i + 1) / H`` (:func:`ndc_to_pixels` maps
  projected points to continuous pixel coordinates ``u = (x + 1) W / 2``,
  ``v = (1 - y) H / 2``). For a non-square image x spans the width and y the height, as
  DECA's renderer arranges for pytorch3d.

Source: DECA's ``batch_orth_proj`` (github.com/yfeng95/DECA ``decalib/utils/util.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def orthographic_project(verts: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's orthographic camera: model-space verts (N, V, 3) -> projected (N, V, 3).

    ``cam`` (N, 3) is ``[scale, tx, ty]`` (as EMOCA predicts): ``xy' = scale * (xy + t)``,
    ``z' = scale * z``. The result's x, y are NDC (x right, y up; see the module docstring
    for the pixel mapping); z only orders depth (larger = nearer the camera).

    Raises ``ValueError`` for shapes other than (N, V, 3) and (N, 3).
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts.shape)}")
    if cam.shape != (verts.shape[0], 3):
        raise ValueError(f"cam must be (N, 3) = (scale, tx, ty), got {tuple(cam.shape)}")
    scale = cam[:, None, :1]
    shifted_xy = verts[..., :2] + cam[:, None, 1:]
    return torch.cat([shifted_xy, verts[..., 2:]], dim=-1) * scale


def ndc_to_pixels(points: torch.Tensor, image_size: int | Sequence[int]) -> torch.Tensor:
    """Projected x, y (..., >= 2) in NDC -> continuous pixel coordinates (..., 2) ``(u, v)``.

    ``u`` = column from the left edge, ``v`` = row from the top edge, in pixels; the centre
    of pixel (row i, column j) is at ``(j + 0.5, i + 0.5)``. ``image_size``: ``S`` or
    ``(H, W)``.
    """
    height, width = image_height_width(image_size)
    u = (points[..., 0] + 1) * (width / 2)
    v = (1 - points[..., 1]) * (height / 2)
    return torch.stack([u, v], dim=-1)


def image_height_width(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``S`` or ``(H, W)`` -> ``(H, W)`` in pixels; ``ValueError`` unless both are >= 1."""
    if isinstance(image_size, int | np.integer):
        height = width = int(image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be S or (H, W), got {image_size!r}")
        height, width = int(image_size[0]), int(image_size[1])
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width
