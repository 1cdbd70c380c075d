"""Which DDS domain a node joins (docs/ros2.md "Which DDS domain"): one rule for every node, printed at start, so
nodes started alone meet; the sim mirror refuses a domain where a robot already publishes /joint_states."""

from __future__ import annotations

import time

import pytest

from realloop.robot.msgs import JointState
from realloop.robot.node import Node
from realloop.robot.transport import resolve_domain

TIMEOUT = 60.0


def test_the_rule_parameter_then_ros_domain_id_then_zero(monkeypatch) -> None:
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    assert resolve_domain() == (0, "the default: domain_id and ROS_DOMAIN_ID unset")
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    assert resolve_domain() == (7, "ROS_DOMAIN_ID")
    assert resolve_domain(3) == (3, "the domain_id parameter")
    with pytest.raises(ValueError, match="domain id from 0 to 232"):
        resolve_domain(500)
    monkeypatch.setenv("ROS_DOMAIN_ID", "x")
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID must be"):
        resolve_domain()


def _wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_nodes_started_alone_meet_the_sim_mirror(start_node, test_node: Node, domain_id: int) -> None:
    """``realloop-node sim_mirror`` with only ROS_DOMAIN_ID set (no domain_id, no graph) is on the same domain as
    any other node started alone, and says so."""
    states: list[JointState] = []
    test_node.create_subscription("/joint_states", JointState, states.append)
    sim = start_node("sim_mirror", "task=arm_lift", "cameras=[]", "seed=0")
    assert test_node.spin_until(lambda: len(states) >= 5, TIMEOUT), sim.log_text()
    assert f"domain {domain_id} (from ROS_DOMAIN_ID)" in sim.log_text()
    # another kind, started alone, prints the same line
    rec = start_node("recorder", f"dataset={sim.log_path.parent / 'rec.zarr'}")
    assert _wait_for(lambda: f"domain {domain_id} (from ROS_DOMAIN_ID)" in rec.log_text()), rec.log_text()


def test_sim_mirror_refuses_a_domain_with_a_robot(start_node, test_node: Node, domain_id: int) -> None:
    pub = test_node.create_publisher("/joint_states", JointState)  # a robot (driver) on this domain
    assert pub is not None
    sim = start_node("sim_mirror", "task=arm_lift", "cameras=[]", "robot_check_s=2.0")
    assert sim.wait(TIMEOUT) == 2, sim.log_text()
    assert "/joint_states publisher" in sim.log_text() and "could drive a real robot" in sim.log_text()


def test_domain_id_parameter_wins_and_is_printed(start_node, domain_id: int, tmp_path) -> None:
    other = 100 + (domain_id - 99) % 130  # not the test's ROS_DOMAIN_ID
    rec = start_node("recorder", f"dataset={tmp_path / 'rec.zarr'}", f"domain_id={other}")
    assert _wait_for(lambda: "(from the domain_id parameter)" in rec.log_text(), 30), rec.log_text()
    assert f"domain {other} (from the domain_id parameter)" in rec.log_text()
