"""The RenderingNode's images of FLAME heads: normal, UV and mask under DECA's camera.

:func:`render` chains the package's steps as DECA's renderer (github.com/yfeng95/DECA
``decalib/utils/renderer.py``) does: the orthographic camera
(:mod:`~dpl_assets.face3d.camera`), the rasterizer (:mod:`~dpl_assets.face3d.rasterizer`),
vertex normals and spherical-harmonics shading (:mod:`~dpl_assets.face3d.shading`) and the
head template's UV layout (:mod:`~dpl_assets.face3d.obj`). Conventions (axes, pixels,
coverage) are in the camera and rasterizer modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from dpl_assets.face3d.camera import orthographic_project
from dpl_assets.face3d.obj import MeshTemplate
from dpl_assets.face3d.rasterizer import (
    ArrayLike,
    Backend,
    covered_pixel_blocks,
    interpolate,
    rasterize,
)
from dpl_assets.face3d.shading import sh_shading, vertex_normals

NormalEncoding = Literal["x255", "biased"]


class Renders(NamedTuple):
    """The RenderingNode's three images per frame, uint8 on the input's device.

    - ``render_normal`` (N, H, W, 3): vertex normals interpolated across faces, RGB = model
      axes (x right, y up, z towards the camera), encoded by ``normal_encoding``; 0 where
      empty.
    - ``render_uv`` (N, H, W, 3): ``(u, 1 - v, 0.5) * SH shading * alpha``, x 255.
    - ``render_mask`` (N, H, W): 255 where the mesh covers the pixel centre, else 0.
    """

    render_normal: torch.Tensor
    render_uv: torch.Tensor
    render_mask: torch.Tensor


def render(
    verts: ArrayLike,
    cam: ArrayLike,
    light: ArrayLike,
    template: MeshTemplate,
    image_size: int | Sequence[int],
    uv_size: int = 256,
    *,
    backend: Backend = "auto",
    normal_encoding: NormalEncoding = "x255",
    max_pairs_per_chunk: int = 1 << 20,
) -> Renders:
    """Render N FLAME meshes as the original RenderingNode (DECA's renderer) did.

    - ``verts`` (N, V, 3) model-space vertices (FLAME output), ``cam`` (N, 3)
      ``[scale, tx, ty]``, ``light`` (N, 9, 3) (or (N, 27)) SH coefficients, all float
      (numpy or torch; computed in float32 on the device of ``verts``).
    - ``template``: the head template's faces and UV layout
      (:func:`~dpl_assets.face3d.obj.load_obj_template`); its V must match ``verts``.
    - ``image_size``: ``S`` or ``(H, W)`` pixels. ``uv_size``: side of the UV texture whose
      texels the UV colours stand for: ``u`` and ``v`` are clamped to
      ``[0.5 / uv_size, 1 - 0.5 / uv_size]``, exactly what bilinearly sampling a texture
      holding each texel centre's ``(u, 1 - v)`` gives (as DECA samples its uv_size
      texture, with edge texels extended), so values away from the UV border are exact.
    - ``normal_encoding``: ``"x255"`` (the original: ``normal * 255`` clipped to [0, 255],
      so negative components become 0; a normal facing the camera is (0, 0, 255)) or
      ``"biased"`` (``(normal + 1) / 2 * 255``, keeps the sign; facing the camera is
      (128, 128, 255)).
    - ``backend``, ``max_pairs_per_chunk``: see :func:`~dpl_assets.face3d.rasterizer.rasterize`.

    Floats become uint8 as ``round(clip(value, 0, 1) * 255)``. Returns :class:`Renders`.
    Raises ``ValueError`` for mismatched shapes or an unknown option, ``ImportError`` for
    ``backend="pytorch3d"`` without pytorch3d.
    """
    if uv_size < 1:
        raise ValueError(f"uv_size must be positive, got {uv_size}")
    if normal_encoding not in ("x255", "biased"):
        raise ValueError(f"normal_encoding must be 'x255' or 'biased', not {normal_encoding!r}")
    verts_t, cam_t, light_t = _checked_inputs(verts, cam, light, template)
    device = verts_t.device
    faces = torch.as_tensor(template.faces, device=device).long()
    projected = orthographic_project(verts_t, cam_t)
    fragments = rasterize(
        projected, faces, image_size, backend=backend, max_pairs_per_chunk=max_pairs_per_chunk
    )
    # Shade only the covered pixels (about half of a face crop), block by block to bound
    # memory, and write them into the images.
    corner_normals = vertex_normals(verts_t, faces)[:, faces]  # (N, F, 3, 3)
    uvs = torch.as_tensor(template.uvs, device=device).float()
    uv_corners = uvs[torch.as_tensor(template.uv_faces, device=device).long()]  # (F, 3, 2)
    texel = 0.5 / uv_size
    image_shape = fragments.pix_to_face.shape
    render_normal = torch.zeros((*image_shape, 3), dtype=torch.uint8, device=device)
    render_uv = torch.zeros_like(render_normal)
    for pixels in covered_pixel_blocks(fragments):
        normals = interpolate(pixels, corner_normals)  # (M, 3)
        counts = torch.bincount(pixels.item, minlength=len(light_t)).tolist()
        shading = torch.cat(
            [
                sh_shading(part[None], light_t[item : item + 1])[0]
                for item, part in enumerate(normals.split(counts))
            ]
        )
        # Clamp after interpolating, as sampling a uv_size texture would.
        u, v = interpolate(pixels, uv_corners[None]).clamp(texel, 1 - texel).unbind(-1)
        uv_colour = torch.stack([u, 1 - v, torch.full_like(u, 0.5)], dim=-1)
        encoded = normals if normal_encoding == "x255" else (normals + 1) / 2
        render_normal.view(-1, 3).index_copy_(0, pixels.flat_index, _to_uint8(encoded))
        render_uv.view(-1, 3).index_copy_(0, pixels.flat_index, _to_uint8(uv_colour * shading))
    return Renders(
        render_normal=render_normal,
        render_uv=render_uv,
        render_mask=fragments.mask.to(torch.uint8) * 255,
    )


def _checked_inputs(
    verts: ArrayLike, cam: ArrayLike, light: ArrayLike, template: MeshTemplate
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 verts (N, V, 3), cam (N, 3), light (N, 9, 3) on the device of ``verts``."""
    verts_t = torch.as_tensor(verts).float()
    device = verts_t.device
    cam_t = torch.as_tensor(cam, device=device).float()
    light_t = torch.as_tensor(light, device=device).float()
    if verts_t.ndim != 3 or verts_t.shape[-1] != 3:
        raise ValueError(f"verts must be (N, V, 3), got {tuple(verts_t.shape)}")
    n_items = verts_t.shape[0]
    if light_t.shape == (n_items, 27):
        light_t = light_t.reshape(n_items, 9, 3)
    if light_t.shape != (n_items, 9, 3):
        raise ValueError(f"light must be (N, 9, 3) SH coefficients, got {tuple(light_t.shape)}")
    if verts_t.shape[1] != len(template.vertices):
        raise ValueError(
            f"verts have {verts_t.shape[1]} vertices but the head template has "
            f"{len(template.vertices)}"
        )
    return verts_t, cam_t, light_t


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
