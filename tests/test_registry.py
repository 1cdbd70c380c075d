"""realloop's one registry idiom (realloop/registry.py): every name -> code map is a Registry whose entries all
import, and an unknown name fails with one line that lists the known ones."""

from __future__ import annotations

import re

import pytest

from realloop.registry import Registry


def _registries() -> dict[str, Registry]:
    from realloop.data.convert import CONVERTERS
    from realloop.policies.base import POLICIES
    from realloop.robot.drivers import DRIVERS
    from realloop.robot.nodes import NODES
    from realloop.robot.transport import TRANSPORTS
    from realloop.sim.envs import TASKS
    from realloop.sim.experts import EXPERTS

    return {
        "converters": CONVERTERS,
        "policies": POLICIES,
        "drivers": DRIVERS,
        "nodes": NODES,
        "transports": TRANSPORTS,
        "tasks": TASKS,
        "experts": EXPERTS,
    }


NAMES = ["converters", "policies", "drivers", "nodes", "transports", "tasks", "experts"]


@pytest.mark.parametrize("which", NAMES)
def test_every_entry_imports_to_a_callable(which: str) -> None:
    reg = _registries()[which]
    assert reg.names(), f"{which} is empty"
    for name in reg:
        assert callable(reg.get(name)), f"{which} entry {name!r} is not callable"


@pytest.mark.parametrize("which", NAMES)
def test_unknown_name_is_one_line_listing_the_known_ones(which: str) -> None:
    reg = _registries()[which]
    with pytest.raises(ValueError) as e:
        reg.get("nope")
    assert str(e.value) == f"unknown {reg.kind} 'nope'; known: {', '.join(reg.names())}"
    assert "\n" not in str(e.value)
    assert "nope" not in reg and list(reg) == reg.names()


def test_entries_must_name_realloop_code() -> None:
    for target in ("os:system", "realloop.sim.envs.arm.ArmLiftEnv", "realloopx.evil:Thing"):
        with pytest.raises(ValueError, match=re.escape("must be 'realloop.module:attribute'")):
            Registry("thing", {"x": target})


def test_the_registries_hold_what_their_callers_expect() -> None:
    import gymnasium as gym

    from realloop.policies.base import POLICIES
    from realloop.robot.transport import TRANSPORTS
    from realloop.sim.envs import TASKS
    from realloop.sim.experts import EXPERTS

    assert TRANSPORTS.names() == ["auto", "dds", "rclpy"]
    assert POLICIES.names() == ["expert", "checkpoint"]
    # every task has an expert (EXPERTS is keyed by the task's class name), and gymnasium has every task id
    assert {TASKS.get(t).__name__ for t in TASKS} == set(EXPERTS)
    for t in TASKS:
        assert gym.spec(t).entry_point.endswith(":" + TASKS.get(t).__name__)
    assert gym.spec("realloop/ArmLift-v0").max_episode_steps == 100


def test_factories_keep_their_callers_messages() -> None:
    from realloop.policies.base import make_policy
    from realloop.robot.transport import make_transport

    with pytest.raises(ValueError, match=re.escape("unknown transport 'zenoh'; known: auto, dds, rclpy")):
        make_transport("zenoh", "x")
    with pytest.raises(
        ValueError,
        match=r"unknown policy kind 'bogus' in the policy config .*; available: "
        r"expert, checkpoint$",
    ):
        make_policy({"kind": "bogus"}, None)
    with pytest.raises(ValueError, match="unknown policy kind"):
        make_policy({"kind": ["expert"]}, None)  # an unhashable kind from YAML is refused, not a TypeError
    with pytest.raises(ValueError, match="acts on a task model"):
        make_policy({"kind": "expert"}, None)
    with pytest.raises(ValueError, match="needs a path"):
        make_policy({"kind": "checkpoint"}, None)


def test_make_expert_refuses_a_task_without_one() -> None:
    from realloop.sim.experts import make_expert

    class Other:
        unwrapped = None

    Other.unwrapped = Other()
    with pytest.raises(ValueError, match="no scripted expert for Other; experts exist for ArmReachEnv, "):
        make_expert(Other())  # type: ignore[arg-type]


def test_convert_cli_choices_come_from_the_registry() -> None:
    import argparse

    from realloop.data.convert import CONVERTERS, add_convert_arguments

    p = argparse.ArgumentParser()
    add_convert_arguments(p)
    (action,) = [a for a in p._actions if a.dest == "from_format"]
    assert list(action.choices) == CONVERTERS.names() == ["diffusion-policy", "rosbag2", "lerobot"]
