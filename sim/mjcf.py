"""The MuJoCo side of a robot spec: compile its MJCF and check that the spec and the model agree.

Joint position limits must equal the MJCF ranges of limited joints; for unlimited (continuous) joints the spec's
limits are software limits. Velocity limits live only in the spec (MJCF has none); effort limits must equal the
actuator's forcerange when the actuator is force-limited.
"""

from __future__ import annotations

import mujoco

from realloop.robot.spec import JointSpec, RobotSpec, RobotSpecError

LIMIT_TOL = 1e-4


def load_model(spec: RobotSpec, purpose: str = "the MuJoCo mirror") -> mujoco.MjModel:
    """Compile the spec's MJCF (RobotSpecError when the spec has none)."""
    return mujoco.MjModel.from_xml_path(str(spec.require_mjcf(purpose)))


def check_against_model(spec: RobotSpec, model: mujoco.MjModel) -> None:
    """Raise RobotSpecError listing every disagreement between ``spec`` and a compiled MJCF ``model``."""
    errors: list[str] = []

    def find(obj: mujoco.mjtObj, name: str) -> int:
        return mujoco.mj_name2id(model, obj, name)

    for j in spec.joints:
        jid = find(mujoco.mjtObj.mjOBJ_JOINT, j.name)
        if jid < 0:
            errors.append(f"joint {j.name!r} is not in the MJCF")
            continue
        if int(model.jnt_type[jid]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            errors.append(f"joint {j.name!r} is not a hinge or slide joint in the MJCF")
        if model.jnt_limited[jid]:
            lo, hi = (float(x) for x in model.jnt_range[jid])
            if abs(lo - j.lower) > LIMIT_TOL or abs(hi - j.upper) > LIMIT_TOL:
                errors.append(
                    f"joint {j.name!r}: spec position limits [{j.lower}, {j.upper}] != MJCF range [{lo:g}, {hi:g}]"
                )
        aid = _joint_actuator(model, j, errors)
        if aid is not None and model.actuator_forcelimited[aid]:
            frc = float(max(abs(x) for x in model.actuator_forcerange[aid]))
            if abs(frc - j.effort) > LIMIT_TOL * max(1.0, frc):
                errors.append(f"joint {j.name!r}: spec effort limit {j.effort} != MJCF actuator forcerange {frc:g}")

    if spec.gripper is not None:
        for name in spec.gripper.joints:
            if find(mujoco.mjtObj.mjOBJ_JOINT, name) < 0:
                errors.append(f"gripper joint {name!r} is not in the MJCF")
        gid = -1 if spec.gripper.actuator is None else find(mujoco.mjtObj.mjOBJ_ACTUATOR, spec.gripper.actuator)
        if spec.gripper.actuator is None:
            errors.append("gripper: no `actuator` named (the MJCF actuator that drives the fingers)")
        elif gid < 0:
            errors.append(f"gripper actuator {spec.gripper.actuator!r} is not in the MJCF")
        elif model.actuator_ctrllimited[gid]:
            lo, hi = (float(x) for x in model.actuator_ctrlrange[gid])
            if abs(lo - spec.gripper.lower) > LIMIT_TOL or abs(hi - spec.gripper.upper) > LIMIT_TOL:
                errors.append(
                    f"gripper: spec position [{spec.gripper.lower}, {spec.gripper.upper}] != MJCF actuator "
                    f"ctrlrange [{lo:g}, {hi:g}]"
                )

    for cam in spec.cameras:
        if cam.mount is None:
            errors.append(f"camera {cam.name!r}: no `mount` (the MJCF camera that renders it in the mirror)")
        elif find(mujoco.mjtObj.mjOBJ_CAMERA, cam.mount) < 0:
            errors.append(f"camera {cam.name!r}: mount {cam.mount!r} is not a camera in the MJCF")
    if spec.ee_site is not None and find(mujoco.mjtObj.mjOBJ_SITE, spec.ee_site) < 0:
        errors.append(f"ee_site {spec.ee_site!r} is not a site in the MJCF")

    substeps = 1.0 / (spec.control_rate_hz * model.opt.timestep)
    if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
        errors.append(
            f"control_rate_hz {spec.control_rate_hz} is not an integer divisor of the physics rate "
            f"{1.0 / model.opt.timestep:g} Hz (timestep {model.opt.timestep:g})"
        )

    if spec.home_keyframe is not None:
        kid = find(mujoco.mjtObj.mjOBJ_KEY, spec.home_keyframe)
        if kid < 0:
            errors.append(f"home_keyframe {spec.home_keyframe!r} is not a keyframe in the MJCF")
        else:
            for j in spec.joints:
                jid = find(mujoco.mjtObj.mjOBJ_JOINT, j.name)
                if jid < 0:
                    continue
                q = float(model.key_qpos[kid, model.jnt_qposadr[jid]])
                if abs(q - spec.default_pose[j.name]) > LIMIT_TOL:
                    errors.append(
                        f"home_keyframe {spec.home_keyframe!r}: {j.name} = {q:g} but default_pose says "
                        f"{spec.default_pose[j.name]}"
                    )

    if errors:
        where = f"{spec.source}: " if spec.source else ""
        raise RobotSpecError(
            f"{where}robot spec {spec.name!r} disagrees with its MJCF {spec.mjcf}:\n  - " + "\n  - ".join(errors)
        )


def _joint_actuator(model: mujoco.MjModel, j: JointSpec, errors: list[str]) -> int | None:
    aid = joint_actuator_id(model, j)
    if aid >= 0:
        return aid
    if j.actuator is not None:
        errors.append(f"joint {j.name!r}: actuator {j.actuator!r} is not in the MJCF")
    else:
        errors.append(f"joint {j.name!r}: no actuator drives it in the MJCF")
    return None


def joint_actuator_id(model: mujoco.MjModel, joint: JointSpec) -> int:
    """The actuator commanding `joint`: the one the spec names, else the one whose transmission is the joint; -1."""
    if joint.actuator is not None:
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, joint.actuator)
    jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint.name)
    for aid in range(model.nu):
        joint_trn = int(model.actuator_trntype[aid]) == int(mujoco.mjtTrn.mjTRN_JOINT)
        if joint_trn and int(model.actuator_trnid[aid, 0]) == jid:
            return aid
    return -1
