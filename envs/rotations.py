"""Rotations for both simulator families, side by side because their quaternions differ:
MuJoCo (the built-in tabletop) stores a quaternion as (w, x, y, z), robosuite (LIBERO) as
(x, y, z, w). Every axis-angle vector here is a rotation vector: unit axis times angle (rad).
"""

from __future__ import annotations

import mujoco
import numpy as np


def axis_angle_from_quat_wxyz(q: np.ndarray) -> np.ndarray:
    """MuJoCo's (w, x, y, z) quaternion -> rotation vector with angle in [0, pi] (q and -q are
    the same rotation: the one with w >= 0 is used)."""
    q = q / np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    s = np.linalg.norm(q[1:])
    if s < 1e-9:
        return np.zeros(3)
    return q[1:] / s * 2.0 * np.arctan2(s, q[0])


def axis_angle_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """robosuite's (x, y, z, w) quaternion -> rotation vector, exactly as robosuite's
    quat2axisangle computes it (no sign canonicalisation: angle in [0, 2 pi]), which the public
    LIBERO ports used for the state's rotation part."""
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(q[:3]) * 2.0 * np.arccos(w) / den


def mat_to_rotvec(m: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> rotation vector with angle in [0, pi]."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(m).ravel())
    return axis_angle_from_quat_wxyz(quat)


def rotvec_to_mat(v: np.ndarray) -> np.ndarray:
    """Rotation vector -> 3x3 rotation matrix."""
    quat, mat = np.zeros(4), np.zeros(9)
    angle = np.linalg.norm(v)
    mujoco.mju_axisAngle2Quat(quat, v / angle if angle > 1e-12 else np.array([1.0, 0, 0]), angle)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def canonical_axis_angle(v: np.ndarray) -> np.ndarray:
    """A gripper pointing down sits near angle pi, where (a, pi) and (-a, pi) flip sign from
    step to step; (-a, 2 pi - angle) is the same rotation, so keep the y component positive."""
    angle = np.linalg.norm(v)
    if angle > np.pi / 2 and v[1] < 0:
        return -v / angle * (2 * np.pi - angle)
    return v


def quat_wxyz_about_z(angle: float, q: np.ndarray) -> np.ndarray:
    """The (w, x, y, z) quaternion q turned by `angle` radians about the world z axis."""
    return mul_quat_wxyz(np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)]), q)


def mul_quat_wxyz(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The product a * b of (w, x, y, z) quaternions (b applied first)."""
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return out


def rotate_by_quat_wxyz(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The vector v rotated by the (w, x, y, z) quaternion q."""
    out = np.zeros(3)
    mujoco.mju_rotVecQuat(out, np.asarray(v, dtype=np.float64), np.asarray(q, dtype=np.float64))
    return out
