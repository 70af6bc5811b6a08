"""Triangle rasterization of projected meshes: per pixel the front-most face.

pytorch3d's ``rasterize_meshes`` when it imports (GPU installs), else the pure-torch
fallback in :mod:`dpl_assets.face3d.rasterizer_torch`; both give the same
:class:`Fragments`. Inputs are in projected space (:mod:`dpl_assets.face3d.camera`: x, y
NDC with y up, z larger = nearer).

- **Coverage**: a pixel is covered by a face when its centre is strictly inside the
  triangle (all three barycentric coordinates > 0), as pytorch3d with ``blur_radius=0``;
  a centre lying exactly on an edge belongs to neither face. Of several covering faces the
  one with the largest projected z wins; exact depth ties go to the lower face index (as
  pytorch3d). No back-face culling. Barycentric coordinates are affine (orthographic:
  no perspective correction).
- Internally both backends rasterize in pytorch3d's screen frame (+x left, +y up, depth
  ``= max_z + 1 - z`` per item, so every depth is >= 1 and pytorch3d never drops a face as
  "behind the camera", which DECA's fixed ``z + 10`` shift could) with pytorch3d's own
  arithmetic for pixel centres and barycentric coordinates, so the two agree to float
  rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch

from dpl_assets.face3d.camera import image_height_width
from dpl_assets.face3d.rasterizer_torch import PIXELS_PER_BLOCK, rasterize_torch

Backend = Literal["auto", "torch", "pytorch3d"]
ArrayLike = np.ndarray | torch.Tensor


class Fragments(NamedTuple):
    """Per-pixel result of rasterizing N meshes into H x W images (one face per pixel).

    - ``pix_to_face`` int64 (N, H, W): index (into the mesh's ``faces``) of the front-most
      face covering the pixel centre, -1 where no face does.
    - ``bary_coords`` float32 (N, H, W, 3): barycentric coordinates of the pixel centre in
      that face (weights of its corners 0, 1, 2; sum 1), 0 where empty.
    - ``z`` float32 (N, H, W): projected z of the visible surface (larger = nearer), -inf
      where empty.
    """

    pix_to_face: torch.Tensor
    bary_coords: torch.Tensor
    z: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """bool (N, H, W): True where a face covers the pixel centre."""
        return self.pix_to_face >= 0


@functools.cache
def pytorch3d_available() -> bool:
    """True when ``pytorch3d``'s mesh rasterizer imports (checked once per process)."""
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
    except (ImportError, OSError):  # OSError: a build that does not match this torch
        return False
    return True


def rasterize(
    verts: torch.Tensor,
    faces: ArrayLike,
    image_size: int | Sequence[int],
    *,
    backend: Backend = "auto",
    max_pairs_per_chunk: int = 1 << 20,
) -> Fragments:
    """Rasterize projected meshes: per pixel the front-most face and its barycentrics.

    ``verts`` float (N, V, 3) in projected space (from
    :func:`~dpl_assets.face3d.camera.orthographic_project`: x, y NDC with y up, z larger =
    nearer); ``faces`` int (F, 3), shared by all N meshes; ``image_size`` ``S`` or
    ``(H, W)`` pixels. ``backend``: ``"torch"`` (:mod:`~dpl_assets.face3d.rasterizer_torch`),
    ``"pytorch3d"`` (``pytorch3d.renderer.mesh.rasterize_meshes``; ImportError if it does
    not import) or ``"auto"`` (pytorch3d when available, else torch). Runs on the device of
    ``verts``. ``max_pairs_per_chunk`` bounds the torch backend's memory: it tests at most
    about twice that many (face, pixel) pairs at once (~150 bytes each, so ~300 MB at the
    default), whatever the face sizes.

    Raises ``ValueError`` for bad shapes, non-finite vertices, face indices out of range or
    an unknown backend.
    """
    height, width = image_height_width(image_size)
    faces_t = _faces_tensor(faces, verts.shape[1], verts.device)
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts.shape)}")
    if not torch.isfinite(verts).all():
        raise ValueError("verts contain NaN or infinite values")
    if max_pairs_per_chunk < 1:
        raise ValueError("max_pairs_per_chunk must be >= 1")
    screen, depth_offset = _to_screen(verts.float(), height, width)
    if _choose_backend(backend) == "pytorch3d":
        pix_to_face, bary, depth = _rasterize_pytorch3d(screen, faces_t, height, width)
    else:
        pix_to_face, bary, depth = rasterize_torch(
            screen, faces_t, height, width, max_pairs_per_chunk
        )
    covered = pix_to_face >= 0
    z = torch.where(covered, depth_offset[:, None, None] - depth, float("-inf"))
    return Fragments(pix_to_face, bary, z)


class CoveredPixels(NamedTuple):
    """Covered pixels of some fragments, flattened (M of them, in row-major order)."""

    flat_index: torch.Tensor  # (M,) into the flattened (N, H, W)
    item: torch.Tensor  # (M,) which mesh
    face: torch.Tensor  # (M,) face within that mesh
    bary: torch.Tensor  # (M, 3)


def covered_pixel_blocks(fragments: Fragments) -> Iterator[CoveredPixels]:
    """The covered pixels of ``fragments``, in blocks of at most 2**20 image pixels (bounds
    the memory of per-pixel work)."""
    _, height, width = fragments.pix_to_face.shape
    faces = fragments.pix_to_face.reshape(-1)
    bary = fragments.bary_coords.reshape(-1, 3)
    for start in range(0, faces.numel(), PIXELS_PER_BLOCK):
        index = torch.nonzero(faces[start : start + PIXELS_PER_BLOCK] >= 0).squeeze(1) + start
        yield CoveredPixels(
            flat_index=index,
            item=torch.div(index, height * width, rounding_mode="floor"),
            face=faces.index_select(0, index),
            bary=bary.index_select(0, index),
        )


def interpolate(pixels: CoveredPixels, face_attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation at covered pixels: corner values (N or 1, F, 3, D) -> (M, D).

    A leading 1 shares the attributes between all meshes. Raises ``ValueError`` for another
    shape or fewer attribute sets than meshes.
    """
    if face_attributes.ndim != 4 or face_attributes.shape[2] != 3:
        raise ValueError(f"face_attributes must be (N, F, 3, D), got {face_attributes.shape}")
    n_sets, n_faces, _, depth = face_attributes.shape
    if n_sets == 1:
        rows = pixels.face
    elif pixels.item.numel() and int(pixels.item.max()) >= n_sets:
        raise ValueError(f"face_attributes hold {n_sets} items, fewer than the fragments")
    else:
        rows = pixels.item * n_faces + pixels.face
    corners = face_attributes.reshape(n_sets * n_faces, 3 * depth).index_select(0, rows)
    weighted = corners.view(-1, 3, depth) * pixels.bary.to(corners.dtype)[:, :, None]
    return weighted.sum(dim=1)


def _faces_tensor(faces: ArrayLike, n_vertices: int, device: torch.device) -> torch.Tensor:
    faces_t = torch.as_tensor(faces, device=device).long()
    if faces_t.ndim != 2 or faces_t.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(faces_t.shape)}")
    if faces_t.numel() and (faces_t.min() < 0 or faces_t.max() >= n_vertices):
        raise ValueError(f"faces index vertices outside 0..{n_vertices - 1}")
    if faces_t.shape[0] >= 2**31:
        raise ValueError("at most 2**31 - 1 faces per mesh")
    return faces_t


def _choose_backend(backend: str) -> str:
    if backend == "torch":
        return "torch"
    if backend == "pytorch3d":
        return "pytorch3d"
    if backend == "auto":
        return "pytorch3d" if pytorch3d_available() else "torch"
    raise ValueError(f"backend must be 'auto', 'torch' or 'pytorch3d', not {backend!r}")


def _to_screen(
    projected: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (x right, y up, z near) -> pytorch3d screen (x left, y up, depth >= 1).

    A non-square image stretches the longer axis as DECA does, so x in [-1, 1] still spans
    the width and y in [-1, 1] the height under pytorch3d's non-square NDC.
    """
    x, y, z = projected.unbind(-1)
    if height > width:
        y = y * (height / width)
    elif width > height:
        x = x * (width / height)
    depth_offset = z.amax(dim=1) + 1 if z.shape[1] else z.new_ones(z.shape[0])
    screen = torch.stack([-x, y, depth_offset[:, None] - z], dim=-1)
    return screen, depth_offset


def _rasterize_pytorch3d(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The contract of :func:`~dpl_assets.face3d.rasterizer_torch.rasterize_torch`, through
    pytorch3d's rasterizer."""
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes
        from pytorch3d.structures import Meshes
    except (ImportError, OSError) as error:
        raise ImportError(
            f"backend='pytorch3d' was requested but pytorch3d does not import ({error}); "
            "install a pytorch3d build matching this torch, or use backend='torch'"
        ) from error
    n_items, n_faces = screen.shape[0], faces.shape[0]
    meshes = Meshes(verts=screen, faces=faces[None].expand(n_items, -1, -1))
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=(height, width),
        blur_radius=0.0,
        faces_per_pixel=1,
        bin_size=None,
        max_faces_per_bin=None,
        perspective_correct=False,
        clip_barycentric_coords=False,
        cull_backfaces=False,
    )
    packed = pix_to_face[..., 0]
    covered = packed >= 0
    # pytorch3d numbers faces across the batch ("packed"); ours count within each mesh.
    first_face = (torch.arange(n_items, device=screen.device) * n_faces)[:, None, None]
    pix_to_face_out = torch.where(covered, packed - first_face, -1)
    bary_out = torch.where(covered[..., None], bary[..., 0, :], 0.0).float()
    return pix_to_face_out, bary_out, zbuf[..., 0].float()
