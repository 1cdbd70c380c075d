"""RobotEnv: the gymnasium environment every realloop sim task builds on.

A task is a robot spec (configs/robot) plus scene objects added to the robot's MJCF with `mujoco.MjSpec`,
a reset distribution, a task state and a reward / success rule. Observations are dicts keyed by the
dataset's feature names, so a rollout writes straight into a realloop dataset:

- ``observation.state``: the robot's proprioception (see `state_names`),
- ``observation.environment_state``: the task's object / goal state (see `env_state_names`), if any,
- ``observation.images.<camera>``: H x W x 3 uint8 images of the spec's cameras, when asked for.

Actions follow the chosen control mode (sim/control.py). One `step` is one control period of the robot
spec (arm 10 Hz, quadruped 50 Hz) run as physics substeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from realloop.robot.observation import STATE, StateBuilder, robot_groups, robot_readings
from realloop.robot.spec import CameraSpec, RobotSpec, load_robot_spec
from realloop.sim.control import make_action_mode
from realloop.sim.randomize import DomainRandomizer, RandomizationConfig, parse_randomization
from realloop.sim.render import CameraRenderer
from realloop.sim.robot import SimRobot

ENV_STATE = "observation.environment_state"
IMAGES = "observation.images."


class RobotEnv(gym.Env):
    """Base class of realloop's sim tasks; subclasses fill in the task hooks (`_build_scene` ... `_evaluate`).

    Args:
        robot: robot spec name or path (default: the task's robot).
        control_mode: one of the spec's control modes (default: the task's).
        cameras: spec camera names to add as image observations, or True for all of them.
        image_size: (height, width) of image observations.
        render_mode: None or "rgb_array" (`render()` returns the first camera at `render_size`).
        shadows: render shadows in images (costly with software OpenGL; cheap on a GPU).
        randomize: domain randomisation config (sim/randomize.py), a mapping or None.
        terminate_on_success: end the episode on the first successful step (default: the task's choice).
        action: extra keyword arguments for the action mode (e.g. max_linear_speed for ee_delta).
    """

    # gymnasium's Env.metadata: read from the class by gym.make, replaced per instance in __init__ (not a ClassVar)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012
    robot_name: ClassVar[str] = "arm6"
    default_control_mode: ClassVar[str] = "joint_position"
    task_description: ClassVar[str] = ""
    env_state_names: ClassVar[tuple[str, ...]] = ()
    ends_on_success: ClassVar[bool] = True
    render_camera: ClassVar[str | None] = None  # MJCF camera of render(); default: the spec's first camera

    def __init__(
        self,
        robot: str | None = None,
        control_mode: str | None = None,
        cameras: Sequence[str] | bool = (),
        image_size: Sequence[int] = (96, 96),
        render_mode: str | None = None,
        render_size: Sequence[int] = (480, 640),
        shadows: bool = False,
        randomize: Mapping[str, Any] | RandomizationConfig | None = None,
        terminate_on_success: bool | None = None,
        action: Mapping[str, float] | None = None,
    ) -> None:
        robot_spec: RobotSpec = load_robot_spec(robot or self.robot_name)
        scene = mujoco.MjSpec.from_file(str(robot_spec.require_mjcf("a sim task")))
        self._build_scene(scene)
        self.model = scene.compile()
        self.data = mujoco.MjData(self.model)
        self.robot = SimRobot(robot_spec, self.model, self.data)
        self.action_mode = make_action_mode(control_mode or self.default_control_mode, self.robot, **(action or {}))
        self.action_space = self.action_mode.space
        self.terminate_on_success = self.ends_on_success if terminate_on_success is None else terminate_on_success

        self._state = StateBuilder(self.state_names, self._state_groups())
        self.cameras: list[CameraSpec] = self._select_cameras(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        spaces: dict[str, gym.spaces.Space] = {
            STATE: gym.spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32)
        }
        if self.env_state_names:
            spaces[ENV_STATE] = gym.spaces.Box(-np.inf, np.inf, (len(self.env_state_names),), np.float32)
        for cam in self.cameras:
            spaces[IMAGES + cam.name] = gym.spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            modes = self.metadata["render_modes"]
            raise ValueError(f"render_mode {render_mode!r} is not supported; use one of {modes}")
        self.render_mode = render_mode
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.metadata = {**self.metadata, "render_fps": robot_spec.control_rate_hz}
        self._renderers: dict[tuple[int, int], CameraRenderer] = {}
        self._body_ids: dict[str, int] = {}
        self.shadows = shadows

        config = parse_randomization(randomize)
        self.randomizer = DomainRandomizer(self.model, config, self.robot.control_dt) if config else None
        self._steps = 0

    # ---------------------------------------------------------------------------------------- task hooks

    def _build_scene(self, scene: mujoco.MjSpec) -> None:
        """Add the task's bodies, geoms and sites to the robot's MJCF."""

    def _reset_task(self) -> None:
        """Sample the task's initial state with `self.np_random` (the robot is already at its default pose)."""

    def _task_state(self) -> np.ndarray:
        """The observation.environment_state vector (`env_state_names`)."""
        return np.zeros(0)

    def set_task_state(self, state: np.ndarray) -> None:
        """Put the task into the state an `observation.environment_state` vector describes (the inverse of
        `_task_state`): how a model of the task follows a real or mirrored one (the policy runner node)."""
        if len(self.env_state_names) or len(state):
            raise NotImplementedError(f"{type(self).__name__} cannot be set from its environment state")

    def sync_robot(
        self, positions: np.ndarray, velocities: np.ndarray | None = None, gripper: float | None = None
    ) -> None:
        """Set the robot's measured joint state (spec order) and gripper opening, then update kinematics."""
        r = self.robot
        self.data.qpos[r.qpos_adr] = positions
        if velocities is not None:
            self.data.qvel[r.dof_adr] = velocities
        if gripper is not None and r.spec.gripper is not None:  # has_gripper
            for j in r.spec.gripper.joints:  # coupled fingers: each opens by the gripper's opening
                self.data.qpos[self.model.jnt_qposadr[self.model.joint(j).id]] = gripper
        mujoco.mj_forward(self.model, self.data)

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        """(reward, success, extra info) for the state after a step."""
        raise NotImplementedError

    def _failed(self) -> bool:
        """True when the episode must end as a failure (e.g. the quadruped fell)."""
        return False

    def body_id(self, name: str) -> int:
        """A body's id, cached: name lookups cost more than the rest of a step's bookkeeping."""
        if name not in self._body_ids:
            self._body_ids[name] = self.model.body(name).id
        return self._body_ids[name]

    # ------------------------------------------------------------------------------------------ robot state

    def _state_groups(self) -> dict[str, list[str]]:
        """The robot's reading groups (realloop.robot.observation): joints, gripper, end effector."""
        return robot_groups(self.robot.spec, ee=self.robot.ee_site_id >= 0)

    def _state_readings(self) -> dict[str, np.ndarray]:
        r = self.robot
        sid = r.ee_site_id
        return robot_readings(
            r.joint_positions(),
            r.joint_velocities(),
            r.gripper_opening() if r.has_gripper else None,
            self.data.site_xpos[sid] if sid >= 0 else None,
            self.data.site_xmat[sid] if sid >= 0 else None,
        )

    @property
    def state_names(self) -> list[str]:
        """Names of the observation.state entries: every reading group's, in order."""
        return [n for names in self._state_groups().values() for n in names]

    def _robot_state(self) -> np.ndarray:
        return self._state(self._state_readings())

    # ------------------------------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if self.randomizer is not None:
            self.randomizer.reset(self.np_random)
        self.robot.reset()
        self._reset_task()
        mujoco.mj_forward(self.model, self.data)
        if self.randomizer is not None:  # with action latency, the first steps apply "hold", not a repeat
            for _ in range(self.randomizer.latency_steps):
                self.randomizer.delay(self.action_mode.hold())
        self._steps = 0
        _, success, extra = self._evaluate()
        return self._observe(), {"is_success": success, **extra}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = self.action_mode.validate(action)
        if self.randomizer is not None:
            a = self.randomizer.delay(a)
            self.randomizer.apply_push(self.data, self.data.time, self.np_random)
        self.action_mode.apply(a)
        self.robot.step()
        self._steps += 1
        reward, success, extra = self._evaluate()
        terminated = (success and self.terminate_on_success) or self._failed()
        return self._observe(), float(reward), bool(terminated), False, {"is_success": success, **extra}

    def observation(self) -> dict[str, np.ndarray]:
        """The observation of the current state (what ``step`` and ``reset`` return): how a model of the task
        kept in sync with a real or mirrored one (``sync_robot``, ``set_task_state``) is read."""
        return self._observe()

    def _observe(self) -> dict[str, np.ndarray]:
        state = self._robot_state().astype(np.float32)
        if self.randomizer is not None:
            state = self.randomizer.noisy(state, self.np_random)
        obs = {STATE: state}
        if self.env_state_names:
            obs[ENV_STATE] = self._task_state().astype(np.float32)
        for cam in self.cameras:
            obs[IMAGES + cam.name] = self._render(_mount(cam), self.image_size)
        return obs

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        cams = self.robot.spec.cameras
        camera = self.render_camera or (_mount(cams[0]) if cams else -1)
        return self._render(camera, self.render_size)

    def _render(self, camera: str | int, size: tuple[int, int]) -> np.ndarray:
        if size not in self._renderers:
            self._renderers[size] = CameraRenderer(self.model, *size, shadows=self.shadows)
        return self._renderers[size].render(self.data, camera)

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    # ------------------------------------------------------------------------------------------ datasets

    @property
    def sim_params(self) -> dict[str, Any]:
        """The physics of the current episode: the randomisation sample (empty when not randomised)."""
        return dict(self.randomizer.sim_params) if self.randomizer is not None else {}

    def dataset_features(self, image_format: str = "jpeg") -> dict[str, dict[str, Any]]:
        """The dataset features a rollout of this env writes (sim/collect.py), all at the control rate.

        Per step: the observation before it, ``action``, and what the step returned: ``next.reward``,
        ``next.success``, ``next.done`` (the episode ended after this step, terminated or truncated) and
        ``next.terminated`` (a true terminal state: no bootstrapping; truncated = done and not terminated).
        Every observation stream has one more sample than the steps: the final observation, after the last step.
        """
        rate = self.robot.spec.control_rate_hz
        features: dict[str, dict[str, Any]] = {
            STATE: {"dtype": "float32", "shape": [len(self.state_names)], "names": self.state_names, "rate_hz": rate},
            "action": {
                "dtype": "float32",
                "shape": list(self.action_mode.space.shape),  # the action_space
                "names": self.action_mode.names,
                "rate_hz": rate,
                "description": f"control mode {self.action_mode.name}",
            },
            "next.reward": {"dtype": "float32", "shape": [], "rate_hz": rate},
            "next.success": {"dtype": "bool", "shape": [], "rate_hz": rate},
            "next.done": {"dtype": "bool", "shape": [], "rate_hz": rate},
            "next.terminated": {"dtype": "bool", "shape": [], "rate_hz": rate},
        }
        if self.env_state_names:
            features[ENV_STATE] = {
                "dtype": "float32",
                "shape": [len(self.env_state_names)],
                "names": list(self.env_state_names),
                "rate_hz": rate,
            }
        for cam in self.cameras:
            shape = [*self.image_size, 3]
            features[IMAGES + cam.name] = {"shape": shape, "image_format": image_format, "rate_hz": rate}
        return features

    def _select_cameras(self, cameras: Sequence[str] | bool) -> list[CameraSpec]:
        known = {c.name: c for c in self.robot.spec.cameras}
        if cameras is True:
            return list(known.values())
        if cameras is False or cameras is None:
            return []
        if isinstance(cameras, str):
            cameras = [cameras]
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise ValueError(
                f"camera(s) {', '.join(unknown)} not in robot spec {self.robot.spec.name!r}; "
                f"its cameras: {', '.join(known) or 'none'}"
            )
        return [known[c] for c in cameras]


def task_of(env: gym.Env) -> RobotEnv:
    """The realloop task inside ``env`` (a gymnasium env of a ``realloop/`` id, wrapped or not)."""
    task = env.unwrapped
    if not isinstance(task, RobotEnv):
        raise TypeError(f"{type(task).__name__} is not a realloop task (sim/envs)")
    return task


def _mount(cam: CameraSpec) -> str:
    """The MJCF camera that renders ``cam``."""
    assert cam.mount is not None, "SimRobot's check_against_model rejects a spec camera without a mount"
    return cam.mount
