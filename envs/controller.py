"""End-effector control: damped-least-squares differential IK from a grip pose to joint targets.

The gripper always points straight down; the commanded pose is a position and a yaw about world z.
Joint targets are clipped to the joint limits and sent to the arm's position actuators, so the
limits are respected by construction. A null-space pull towards `HOME_QPOS` keeps the 7-joint arm
away from awkward postures.
"""

from __future__ import annotations

import mujoco
import numpy as np

from .scene import ARM_JOINTS, HOME_QPOS

_DOWN = np.diag([1.0, -1.0, -1.0])  # grip frame at yaw 0: x along world x, z pointing down


def grip_rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ _DOWN


class DiffIK:
    """Solves for arm joint positions that put the `grip` site at a pose, on a private MjData."""

    def __init__(self, model: mujoco.MjModel, damping: float = 0.03, null_gain: float = 0.05,
                 max_dq: float = 0.25, limit_margin: float = 0.02):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = model.site("grip").id
        jnt = [model.joint(n).id for n in ARM_JOINTS]
        self.qadr = np.array([model.jnt_qposadr[j] for j in jnt])
        self.dadr = np.array([model.jnt_dofadr[j] for j in jnt])
        rng = model.jnt_range[jnt]
        self.lo = rng[:, 0] + limit_margin
        self.hi = rng[:, 1] - limit_margin
        self.damping2 = damping**2
        self.null_gain = null_gain
        self.max_dq = max_dq
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def solve(self, q: np.ndarray, pos: np.ndarray, yaw: float, iters: int = 3, tol: float = 1e-4) -> np.ndarray:
        """Joint positions near `q` that reach (pos, yaw) as closely as `iters` DLS steps allow."""
        q = np.clip(np.array(q, dtype=float), self.lo, self.hi)
        target_rot = grip_rotation(yaw)
        m, d = self.model, self.data
        err = np.zeros(6)
        quat = np.zeros(4)
        for _ in range(iters):
            d.qpos[self.qadr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err[:3] = pos - d.site_xpos[self.site]
            rot_err = target_rot @ d.site_xmat[self.site].reshape(3, 3).T
            mujoco.mju_mat2Quat(quat, rot_err.reshape(-1))
            mujoco.mju_quat2Vel(err[3:], quat, 1.0)
            if np.linalg.norm(err[:3]) < tol and np.linalg.norm(err[3:]) < 10 * tol:
                break
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dadr], self._jacr[:, self.dadr]])
            jjt = jac @ jac.T + self.damping2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))
            dq += (np.eye(len(q)) - pinv @ jac) @ (self.null_gain * (HOME_QPOS - q))
            scale = np.max(np.abs(dq)) / self.max_dq
            if scale > 1.0:
                dq /= scale
            q = np.clip(q + dq, self.lo, self.hi)
        return q
