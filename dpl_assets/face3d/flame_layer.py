"""The FLAME layer: batched linear blend skinning from (shape, exp, pose) to a posed head.

:class:`FlameLayer` turns a loaded :class:`~dpl_assets.face3d.flame.FlameModel` into posed
vertices (N, V, 3) and the 68 3D landmarks (N, 68, 3), as FLAME (Li et al. 2017) and DECA's
``decalib/models/FLAME.py`` / ``lbs.py`` define them.

Conventions (those of FLAME and of DECA/EMOCA, which produce the parameters):

- Coordinates: FLAME's model frame, right-handed, in **metres**: +x towards the subject's
  left (image right for a frontal face), +y up, +z out of the face (towards a frontal
  camera). Checked on DECA's FLAME head template with the landmark embedding: the outer
  corner of the subject's right eye (landmark 36) has x < 0, the chin lies below the eyes,
  the nose tip has the largest z.
- Pose: rotation vectors (axis-angle, **radians**; direction = axis, norm = angle,
  right-hand rule), the same as SciPy's ``Rotation.from_rotvec``. ``pose`` (N, 6) =
  ``[global (3), jaw (3)]``; neck and eye rotations are zero, as in DECA and the original
  tool. The global rotation turns the whole head about the root joint (regressed from the
  shaped template), the jaw about joint 2; a joint's world rotation is its parent's world
  rotation times its own (``R_jaw_world = R_global @ R_neck @ R_jaw``).
- No translation or camera is applied: outputs stay in the model frame. DECA's
  orthographic camera ``cam = (s, tx, ty)`` maps a point to normalized image coordinates
  ``(s * (x + tx), -s * (y + ty))`` (y flipped: image rows grow downwards), and pixels are
  ``(u + 1) * size / 2``.
- For comparison with Euler-angle head poses:
  ``Rotation.from_rotvec(pose[:, :3]).as_euler("XYZ", degrees=True)`` gives rotations about
  the model's x (pitch), y (yaw) and z (roll) axes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from dpl_assets.face3d.flame import FLAME_SHAPE_COMPONENTS, NUM_LANDMARKS, FlameModel

POSE_DIM = 6  # global axis-angle (3) + jaw axis-angle (3)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: rotation vectors (..., 3) in radians -> rotation matrices (..., 3, 3).

    ``R = I + sinc(θ) K + ½ sinc²(θ/2) K²`` with ``K`` the cross-product matrix of the
    (unnormalized) vector and θ its norm. Written with sinc so that θ = 0 gives exactly I and
    finite gradients (DECA instead nudges the vector by 1e-8, which is not exact at zero).
    """
    theta = torch.linalg.vector_norm(rotvec, dim=-1)[..., None, None]
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1)
    skew = skew.reshape(*rotvec.shape[:-1], 3, 3)
    a = torch.sinc(theta / torch.pi)  # sin(θ)/θ
    b = 0.5 * torch.sinc(theta / (2 * torch.pi)) ** 2  # (1 - cos θ)/θ², without cancellation
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * skew + b * (skew @ skew)


class FlameOutput(NamedTuple):
    """FLAME layer outputs, model frame, metres."""

    verts: torch.Tensor  # (N, V, 3)
    landmarks3d: torch.Tensor  # (N, 68, 3)


class FlameLayer(nn.Module):
    """Batched FLAME: (shape, exp, pose) -> posed vertices and the 68 3D landmarks.

    Args:
        model: the loaded :class:`FlameModel`.
        n_shape: identity coefficients used (the first ``n_shape`` of 300; DECA/EMOCA: 100).
        n_exp: expression coefficients used (the first ``n_exp`` of 100; DECA/EMOCA: 50).
        dtype: computation and output dtype (float32 like the original).

    Every array is a buffer, so ``layer.to(device)`` moves the model; inputs are moved to
    the layer's device and dtype. See the module docstring for axes, units and angles.
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor
    joint_template: torch.Tensor
    joint_shapedirs: torch.Tensor
    lbs_weights: torch.Tensor
    weight_sum_excess: torch.Tensor
    faces: torch.Tensor
    lmk_vertex_idx: torch.Tensor
    lmk_bary_coords: torch.Tensor

    def __init__(
        self,
        model: FlameModel,
        n_shape: int = 100,
        n_exp: int = 50,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        n_components = model.shapedirs.shape[2]
        n_exp_available = n_components - FLAME_SHAPE_COMPONENTS
        if not 0 <= n_shape <= FLAME_SHAPE_COMPONENTS:
            raise ValueError(f"n_shape must be in [0, {FLAME_SHAPE_COMPONENTS}], got {n_shape}")
        if not 0 <= n_exp <= n_exp_available:
            raise ValueError(
                f"n_exp must be in [0, {max(n_exp_available, 0)}] for a model with "
                f"{n_components} blend shapes, got {n_exp}"
            )
        self.n_shape = n_shape
        self.n_exp = n_exp
        self.dtype = dtype
        n_verts = model.num_vertices
        start = FLAME_SHAPE_COMPONENTS
        dirs = np.concatenate(
            [model.shapedirs[:, :, :n_shape], model.shapedirs[:, :, start : start + n_exp]], axis=2
        )  # (V, 3, K)
        n_pose = model.posedirs.shape[2]

        def buffer(name: str, array: np.ndarray, buffer_dtype: torch.dtype = dtype) -> None:
            self.register_buffer(
                name, torch.as_tensor(np.ascontiguousarray(array), dtype=buffer_dtype)
            )

        buffer("v_template", model.v_template)
        # Flattened (K, V*3) and (P, V*3) so blend shapes are one matmul per batch.
        buffer("shapedirs", dirs.reshape(n_verts * 3, -1).T)
        buffer("posedirs", model.posedirs.reshape(n_verts * 3, n_pose).T)
        # Joints are linear in the shaped template, so regress them from the template and
        # blend shapes once here (float64) instead of from every shaped mesh.
        regressor = model.J_regressor
        buffer("joint_template", regressor @ model.v_template)  # (J, 3)
        n_joints = regressor.shape[0]
        joint_dirs = np.asarray(regressor @ dirs.reshape(n_verts, -1)).reshape(n_joints, 3, -1)
        buffer("joint_shapedirs", joint_dirs.reshape(n_joints * 3, -1).T)  # (K, J*3)
        buffer("lbs_weights", model.weights)
        buffer("weight_sum_excess", model.weights.sum(axis=1, keepdims=True) - 1.0)  # (V, 1)
        buffer("faces", model.faces, torch.long)
        buffer("lmk_vertex_idx", model.faces[model.lmk_faces_idx], torch.long)  # (L, 3)
        buffer("lmk_bary_coords", model.lmk_bary_coords)
        self.parents: list[int] = model.parents.tolist()

    def forward(self, shape: torch.Tensor, exp: torch.Tensor, pose: torch.Tensor) -> FlameOutput:
        """Pose a batch of heads.

        Args:
            shape: (N, n_shape) identity coefficients.
            exp: (N, n_exp) expression coefficients.
            pose: (N, 6) axis-angle radians, ``[global (3), jaw (3)]``.

        Returns:
            ``FlameOutput(verts (N, V, 3), landmarks3d (N, 68, 3))`` in metres, model frame.
        """
        n = shape.shape[0] if shape.ndim == 2 else -1
        expected = {
            "shape": (shape, self.n_shape),
            "exp": (exp, self.n_exp),
            "pose": (pose, POSE_DIM),
        }
        for name, (tensor, width) in expected.items():
            if tensor.ndim != 2 or tensor.shape != (n, width):
                raise ValueError(
                    f"{name} must have shape (N, {width}) with the same N as shape, "
                    f"got {tuple(tensor.shape)}"
                )
        device = self.v_template.device
        betas = torch.cat([shape, exp], dim=1).to(device=device, dtype=self.dtype)
        pose = pose.to(device=device, dtype=self.dtype)

        n_verts = self.v_template.shape[0]
        v_shaped = self.v_template + (betas @ self.shapedirs).view(n, n_verts, 3)
        joints = self.joint_template + (betas @ self.joint_shapedirs).view(n, -1, 3)

        # Full per-joint pose: global, neck (0), jaw, eyes (0, 0).
        zeros = pose.new_zeros(n, 3)
        rotvecs = torch.stack([pose[:, :3], zeros, pose[:, 3:], zeros, zeros], dim=1)
        local = axis_angle_to_matrix(rotvecs)  # (N, J, 3, 3)
        eye = torch.eye(3, dtype=self.dtype, device=device)
        pose_feature = (local[:, 1:] - eye).reshape(n, -1)  # (N, 36), non-root joints only
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(n, n_verts, 3)

        rotations, translations = self._world_transforms(local, joints)
        # Classic LBS Σ_j w_j (R_j v + t_j), rewritten as
        # v + (Σ_j w_j - 1) v + Σ_j w_j ((R_j - I) v + t_j): the same numbers, but the rest
        # pose gives exactly v (FLAME's weights sum to 1, so the middle term is ~1e-16 v).
        n_joints = rotations.shape[1]
        blended = (self.lbs_weights @ (rotations - eye).reshape(n, n_joints, 9)).view(
            n, n_verts, 3, 3
        )
        verts = (
            v_posed
            + self.weight_sum_excess * v_posed
            + (blended @ v_posed.unsqueeze(-1)).squeeze(-1)
            + self.lbs_weights @ translations
        )
        corners = verts[:, self.lmk_vertex_idx]  # (N, L, 3 corners, 3 coords)
        landmarks = torch.einsum("nlkc,lk->nlc", corners, self.lmk_bary_coords)
        return FlameOutput(verts=verts, landmarks3d=landmarks)

    def _world_transforms(
        self, local: torch.Tensor, joints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotations (N, J, 3, 3) and translations (N, J, 3) with x -> R_j x + t_j.

        A joint rotates about its rest position J_j: t_j = P_j - R_j J_j, with P_j its posed
        position. Since P_j = R_parent J_j + t_parent, t_j = t_parent + (R_parent - R_j) J_j
        (root: t_0 = (I - R_0) J_0): differences of rotations, so zero for the rest pose.
        """
        eye = torch.eye(3, dtype=local.dtype, device=local.device)
        rotations: list[torch.Tensor] = []
        translations: list[torch.Tensor] = []
        for j, parent in enumerate(self.parents):
            rest = joints[:, j].unsqueeze(-1)  # (N, 3, 1)
            if parent < 0:
                rotation = local[:, j]
                translation = ((eye - rotation) @ rest).squeeze(-1)
            else:
                rotation = rotations[parent] @ local[:, j]
                offset = ((rotations[parent] - rotation) @ rest).squeeze(-1)
                translation = translations[parent] + offset
            rotations.append(rotation)
            translations.append(translation)
        return torch.stack(rotations, dim=1), torch.stack(translations, dim=1)

    @torch.inference_mode()
    def forward_numpy(
        self, shape: np.ndarray, exp: np.ndarray, pose: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`forward` over NumPy arrays in batches of ``batch_size`` frames.

        Returns float32 ``verts`` (N, V, 3) and ``landmarks3d`` (N, 68, 3), on the CPU.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(shape)
        n_verts = self.v_template.shape[0]
        verts = np.empty((n, n_verts, 3), np.float32)
        landmarks = np.empty((n, NUM_LANDMARKS, 3), np.float32)
        for start in range(0, n, batch_size):
            window = slice(start, start + batch_size)
            out = self(
                torch.from_numpy(np.asarray(shape[window])),
                torch.from_numpy(np.asarray(exp[window])),
                torch.from_numpy(np.asarray(pose[window])),
            )
            verts[window] = out.verts.float().cpu().numpy()
            landmarks[window] = out.landmarks3d.float().cpu().numpy()
        return verts, landmarks
