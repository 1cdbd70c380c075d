"""What the arm's wrist camera can see for arm lift: the grasp point's angle off the camera's axis against its half
field of view, and, with the arm at its start pose, which cube positions show in the 96x96 frame a camera policy
gets (``fit_image`` of a 640x480 render, as training and the runner frame it). ``--tilt`` rotates the camera
towards the fingers by that many degrees from the model's mount (tilted 20 degrees; ``--tilt -20`` looks along the
fingers), to compare mounts without editing the model.

    python benchmarks/wrist_camera_view.py --tilt -20 0 --out benchmarks/results/wrist_camera_view.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from realloop.data.images import fit_image
from realloop.robot.nodes.sim_mirror import task_model_env
from realloop.sim.render import off_axis_deg

XS = np.round(np.arange(0.30, 0.501, 0.02), 2)  # the task draws the cube's x in [0.30, 0.50] m
YS = (-0.15, 0.0, 0.15)  # and its y in [-0.15, 0.15] m
MIN_RED_PIXELS = 10  # of the 96x96 frame: the cube (rgb 0.85, 0.2, 0.2) is in view


def grasp_point_angle(env: Any) -> tuple[float, float]:
    """(degrees between the wrist camera's optical axis and the grasp point, the camera's vertical half FOV)."""
    m, d = env.unwrapped.model, env.unwrapped.data
    angle = off_axis_deg(m, d, "wrist_cam", d.site("ee_site").xpos)
    return angle, float(m.cam_fovy[m.camera("wrist_cam").id] / 2)


def visible(env: Any, renderer: mujoco.Renderer, x: float, y: float) -> bool:
    """Whether a cube at (x, y), square to the table, shows in the fitted wrist frame at the start pose."""
    u = env.unwrapped
    u.set_task_state(np.array([x, y, u.half, 1, 0, 0, 0, 1, 0]))  # position, then the rot6d of no rotation
    mujoco.mj_forward(u.model, u.data)
    renderer.update_scene(u.data, camera="wrist_cam")
    img = fit_image(renderer.render(), (96, 96))
    red = (img[..., 0] > 150) & (img[..., 1] < 100) & (img[..., 2] < 100)
    return int(red.sum()) >= MIN_RED_PIXELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tilt", type=float, nargs="+", default=[0.0], help="camera tilts towards the fingers, degrees")
    ap.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = ap.parse_args()
    env = task_model_env("arm_lift", "joint_position", 0)
    env.reset(seed=0)  # the start pose
    m = env.unwrapped.model
    cam = m.camera("wrist_cam").id
    mount = m.cam_quat[cam].copy()
    renderer = mujoco.Renderer(m, 480, 640)
    results = []
    for tilt in args.tilt:
        turn = np.zeros(4)
        mujoco.mju_axisAngle2Quat(turn, np.array([1.0, 0.0, 0.0]), np.deg2rad(-tilt))  # about the image's x axis
        mujoco.mju_mulQuat(m.cam_quat[cam], mount, turn)
        mujoco.mj_forward(m, env.unwrapped.data)
        angle, half_fov = grasp_point_angle(env)
        seen = {f"y={y:+.2f}": [float(x) for x in XS if visible(env, renderer, x, y)] for y in YS}
        in_view = f"{sum(len(v) for v in seen.values())}/{len(XS) * len(YS)}"
        results.append(
            {
                "tilt_deg": tilt,
                "grasp_point_off_axis_deg": round(angle, 1),
                "half_fov_deg": half_fov,
                "cube_x_in_view_at_start_pose": seen,
                "positions_in_view": in_view,
            }
        )
        print(
            f"tilt {tilt:4.1f} deg: grasp point {angle:.1f} deg off axis (half FOV {half_fov:.1f}); cube in view at "
            f"the start pose for {in_view} positions; x in view: {seen}"
        )
    renderer.close()
    if args.out:
        summary = {"machine": "any (geometry and rendering, no timing)", "results": results}
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
