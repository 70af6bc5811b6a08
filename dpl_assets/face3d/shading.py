"""Shading of FLAME meshes as DECA/EMOCA shade them: vertex normals and SH irradiance.

Order-2 spherical harmonics irradiance (Ramamoorthi & Hanrahan 2001, "An efficient
representation for irradiance environment maps"), with DECA's basis order and scale
(github.com/yfeng95/DECA ``decalib/utils/renderer.py``, ``add_SHlight``), so EMOCA's
``light`` (N, 9, 3) coefficients apply as is.
"""

from __future__ import annotations

import math

import torch

# Per basis function [1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]: the real SH
# normalisation x the Lambert kernel's A_l (2 pi / 3 for band 1, pi / 4 for band 2; bands
# 1-2 equal the paper's c1, c2, c5 constants). Band 0 carries no A_0 = pi: EMOCA's light
# coefficients were trained with DECA's factors, so we keep them exactly.
_BAND0_FACTOR = 1.0 / math.sqrt(4 * math.pi)
_BAND1_FACTOR = (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi))
_BAND2_FACTOR = (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi))
_SH_FACTORS = (
    _BAND0_FACTOR,
    _BAND1_FACTOR,
    _BAND1_FACTOR,
    _BAND1_FACTOR,
    _BAND2_FACTOR,
    _BAND2_FACTOR,
    _BAND2_FACTOR,
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (N, V, 3): area-weighted sums of adjacent face normals (as DECA).

    ``verts`` float (N, V, 3) in model space, ``faces`` int64 (F, 3). Face normals follow
    the right-hand rule ``(v1 - v0) x (v2 - v0)``: a triangle whose corners run
    counter-clockwise as seen from the camera faces the camera (+z). A vertex no face
    touches gets a zero normal.
    """
    corners = verts[:, faces]  # (N, F, 3, 3)
    # The cross product's length is twice the face area: larger faces weigh more.
    face_normals = torch.linalg.cross(
        corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1
    )
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-6)


def sh_shading(normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Spherical-harmonics irradiance (N, ..., 3) for normals (N, ..., 3), light (N, 9, 3).

    ``light[n, k, c]`` is the coefficient of SH basis function k for colour channel c, in
    DECA/EMOCA's order and scale; the shading is ``sum_k light[n, k, c] * factor_k *
    basis_k(normal)`` with the basis ``[1, x, y, z, xy, xz, yz, x^2 - y^2, 3 z^2 - 1]`` in
    model axes. Normals are used as given (DECA does not renormalise interpolated normals).
    A light of ``[sqrt(4 pi), 0, ...]`` per channel shades every normal with 1. Unitless
    (a factor on the albedo).
    """
    basis = sh_basis(normals)
    flat = basis.reshape(basis.shape[0], -1, 9)
    return torch.bmm(flat, light.to(basis.dtype)).reshape(*normals.shape)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) normals -> (..., 9) DECA's SH basis functions times their factors."""
    x, y, z = normals.unbind(-1)
    basis = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim=-1
    )
    return basis * basis.new_tensor(_SH_FACTORS)
