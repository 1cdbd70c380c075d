"""The policy runner node: behind the safety filter, its next ee_delta step starts from what the filter really
forwarded (after a clamp, a rejection or a hold), not from where the policy wanted to be; image policies see
camera topics framed as their training frames were."""

from __future__ import annotations

import dataclasses
import json
import time

import cv2
import numpy as np
import pytest

from realloop.data.images import fit_image
from realloop.robot.msgs import Float64MultiArray, JointState, String
from realloop.robot.node import Node
from realloop.robot.nodes.policy_runner import FilterEcho
from realloop.robot.safety.filter import SafetyConfig, SafetyFilter
from realloop.robot.spec import WorkspaceSpec, load_robot_spec


class Watch:
    """The test's view of a sim mirror -> policy runner -> safety filter graph: the runner's commands (with their
    arrival times), the runner's and the filter's statuses, recorder commands and (optionally) joint states."""

    def __init__(self, node: Node, joints: bool = False) -> None:
        self.commands: list[np.ndarray] = []
        self.command_times: list[float] = []
        self.runner: list[dict] = []
        self.safety: list[dict] = []
        self.recorder: list[str] = []
        self.joints: list[JointState] = []
        node.create_subscription("/unsafe/arm_controller/commands", Float64MultiArray, self._on_command)
        node.create_subscription(
            "/policy_runner/status", String, lambda m: self.runner.append(json.loads(m.data)), qos="latched"
        )
        node.create_subscription(
            "/safety/status", String, lambda m: self.safety.append(json.loads(m.data)), qos="latched"
        )
        node.create_subscription("/recorder/command", String, lambda m: self.recorder.append(m.data))
        if joints:
            node.create_subscription("/joint_states", JointState, self.joints.append)

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands.append(np.array(msg.data))
        self.command_times.append(time.monotonic())


def start_behind_floor(start_node, domain_id: int, arm6_variant, floor: float, *runner_params: str) -> list:
    """The sim arm (lift, seed 0), a safety filter on an arm6 spec whose workspace floor is at ``floor`` (m) and the
    scripted expert in the policy runner (on the same spec), commanding through the filter on sim time."""
    spec = arm6_variant(workspace={"min": [0.1, -0.45, floor], "max": [0.75, 0.45, 0.6]})
    return [
        start_node("sim_mirror", "task=arm_lift", f"domain_id={domain_id}", "cameras=[]", "seed=0"),
        start_node("safety_filter", f"robot={spec}"),
        start_node(
            "policy_runner",
            "task=arm_lift",
            f"robot={spec}",
            "policy.kind=expert",
            "command_prefix=/unsafe",
            "use_sim_time=true",
            *runner_params,
        ),
    ]


FK = SafetyFilter(
    dataclasses.replace(load_robot_spec("arm6"), workspace=WorkspaceSpec((-9, -9, -9), (9, 9, 9))), SafetyConfig()
)


def ee_z(q: np.ndarray) -> float:
    """Height of the end effector (m) at joint positions ``q``."""
    return float(FK.ee_position(np.asarray(q[:6]))[2])


def test_fit_image_crops_to_the_training_aspect_then_resizes() -> None:
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # the outer 40 columns of a 4:3 frame fall outside a square crop
    img[:, -40:] = (255, 0, 0)
    img[:, 40:-40] = (0, 200, 0)
    img[:120, 40:-40, 2] = 90  # top half marked: nothing of the height is lost
    out = fit_image(img, (96, 96, 3))
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    assert out[..., 0].max() == 0  # no red: the sides were cropped, not squeezed in
    assert np.all(out[:47, :, 2] == 90) and np.all(out[49:, :, 2] == 0)
    assert fit_image(img, (240, 320, 3)) is img  # already the training size
    tall = fit_image(np.zeros((300, 100, 3), np.uint8), (32, 64, 3))
    assert tall.shape == (32, 64, 3)


def test_filter_echo_reports_what_the_robot_really_got() -> None:
    echo = FilterEcho()
    assert echo.actual() is None  # nothing sent yet
    sent = np.array([0.1, 0.2, 0.3])
    echo.sent(sent)
    assert echo.actual() is None  # no echo yet: nothing known
    echo.on_forwarded(sent.copy())
    assert echo.actual() is None  # forwarded as sent
    echo.sent(sent + 0.5)
    assert np.array_equal(echo.actual(), sent)  # rejected: the robot keeps the last forwarded target
    echo.on_forwarded(sent + 0.2)
    assert np.array_equal(echo.actual(), sent + 0.2)  # clamped: a shorter step
    echo.on_forwarded(sent + 0.5)
    assert echo.actual() is None  # the newest message decides: taken after all
    echo.on_forwarded([9.0, 9.0, 9.0])
    assert np.array_equal(echo.actual(), [9.0, 9.0, 9.0])  # a hold
    echo.on_forwarded([0.1, 0.2])
    assert echo.actual().shape == (2,)  # another shape never counts as an echo
    echo.reset()
    assert echo.actual() is None


def test_runner_steps_from_the_filtered_target_not_its_own(
    start_node, test_node: Node, domain_id: int, arm6_variant
) -> None:
    """A workspace floor at z = 0.10 (the lift expert hovers at 0.09..0.15, then descends to ~0.03): the filter
    rejects every step down. Each runner command must stay within one descent step of the floor; a runner that
    stepped from its own targets walks them down to the grasp height, every command rejected."""
    floor = 0.10
    w = Watch(test_node, joints=True)
    procs = start_behind_floor(start_node, domain_id, arm6_variant, floor, "policy.seed=0", "workspace_margin=null")
    ok = test_node.spin_until(lambda: bool(w.runner) and w.runner[-1].get("steps", 0) >= 60, 120)
    logs = "\n".join(p.log_text()[-2000:] for p in procs)
    for p in procs:
        assert p.poll() is None, logs
    assert ok, f"runner status {w.runner[-1:]}, safety {w.safety[-1:]}\n{logs}"
    assert w.safety[-1]["counters"]["rejected"].get("workspace", 0) >= 5, w.safety[-1]  # the fault happened
    assert w.runner[-1]["rebased"] >= 5, w.runner[-1]

    z = np.array([ee_z(q) for q in w.commands])
    descent_step = 0.6 * 0.05  # the expert's fastest descent: 0.6 x the ee_delta bound of 0.05 m per step
    assert z.min() >= floor - descent_step - 0.005, f"runner commands walked below the floor: min z {z.min():.3f}"
    assert z.min() < floor, "the expert never tried to descend below the floor: the test shows nothing"
    # the robot stayed above the floor too (the filter's job), at the floor rather than hovering far above
    measured = np.array([ee_z(np.array(m.position)) for m in w.joints[-10:]])
    assert np.all(measured > floor - 0.02) and np.all(measured < floor + 0.03), measured


def test_fit_image_frames_a_wide_sim_render_as_the_training_render() -> None:
    """The sim mirror renders 320x240; a policy trained at 96x96 saw the same camera (same vertical field of
    view) at 1:1. The fitted wide frame must match the 96x96 render, which squeezing it would not."""
    import gymnasium as gym

    import realloop.sim  # noqa: F401 - registers the realloop/ ids

    frames = {}
    for size in ((96, 96), (240, 320)):
        env = gym.make("realloop/ArmLift-v0", cameras=["front"], image_size=list(size))
        obs, _ = env.reset(seed=3)
        frames[size] = obs["observation.images.front"]
        env.close()
    small, wide = frames[(96, 96)].astype(float), frames[(240, 320)]
    fitted = np.abs(fit_image(wide, (96, 96, 3)).astype(float) - small).mean()
    squeezed = np.abs(cv2.resize(wide, (96, 96), interpolation=cv2.INTER_AREA).astype(float) - small).mean()
    assert fitted < 2.0 and fitted < squeezed / 5, (fitted, squeezed)  # measured: 0.35 vs 6.9


def test_an_episode_without_success_ends_as_a_failure_after_max_episode_s(
    start_node, test_node: Node, domain_id: int, arm6_variant
) -> None:
    """A workspace floor above the cube: the expert cannot grasp, so the task never succeeds. After
    ``max_episode_s`` of sim time from its first action the runner holds (no more commands) and tells the recorder
    the episode failed."""
    w = Watch(test_node)
    procs = start_behind_floor(start_node, domain_id, arm6_variant, 0.10, "report_success=true", "max_episode_s=3")
    ok = test_node.spin_until(lambda: bool(w.runner) and w.runner[-1]["state"] == "timeout", 90)
    logs = "\n".join(p.log_text()[-2000:] for p in procs)
    assert ok, f"runner status {w.runner[-1:]}\n{logs}"
    ended = time.monotonic()
    assert test_node.spin_until(lambda: "failure" in w.recorder, 5), w.recorder
    assert "success" not in w.recorder
    steps = w.runner[-1]["steps"]
    assert 15 <= steps <= 35, f"{steps} steps in a 3 s episode at 10 Hz (fewer when ticks are skipped under load)"
    test_node.spin(1.0)
    assert not [t for t in w.command_times if t > ended + 0.2], "the runner kept commanding after the episode ended"
    assert "no success within max_episode_s=3 s" in procs[2].log_text()


def test_runner_clips_its_targets_into_the_workspace_so_the_filter_rejects_none(
    start_node, test_node: Node, domain_id: int, arm6_variant
) -> None:
    """The same floor at z = 0.10 in the filter, and 5 mm above it in the runner's workspace: the expert's descent
    ends at the runner's floor, every command goes through, and the arm rests at the floor."""
    floor = 0.10
    w = Watch(test_node)
    procs = start_behind_floor(start_node, domain_id, arm6_variant, floor)  # the runner's default margin: 5 mm
    ok = test_node.spin_until(lambda: bool(w.runner) and w.runner[-1].get("steps", 0) >= 60, 120)
    logs = "\n".join(p.log_text()[-2000:] for p in procs)
    assert ok, f"runner status {w.runner[-1:]}, safety {w.safety[-1:]}\n{logs}"
    test_node.spin_until(lambda: bool(w.safety) and w.safety[-1]["counters"]["accepted"] >= 60, 5)
    assert w.safety[-1]["counters"]["rejected"] == {}, w.safety[-1]
    z = np.array([ee_z(q) for q in w.commands])
    assert z.min() == pytest.approx(floor + 0.005, abs=0.003), "the descent did not end at the runner's floor"
