"""The driver contract: the kinematic stand-in and MuJoCo physics behind one interface, and the driver node that
serves any driver as /joint_states plus ros2_control command topics (real processes on DDS)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realloop.robot.drivers import DRIVERS, Driver, DriverError, make_driver
from realloop.robot.msgs import Float64MultiArray, JointState, String
from realloop.robot.node import Node
from realloop.robot.spec import load_robot_spec


@pytest.mark.parametrize("kind", DRIVERS.names())
def test_every_driver_keeps_the_contract(kind: str) -> None:
    spec = load_robot_spec("arm6")
    now = [100.0]
    driver = make_driver(spec, {"kind": kind, "clock": lambda: now[0]})
    assert isinstance(driver, Driver)
    driver.connect()
    start = driver.read_state()
    assert start.names == [*spec.joint_names, "finger_left", "finger_right"]
    np.testing.assert_allclose(start.position[:6], spec.default_positions, atol=0.02)
    target = np.array(spec.default_positions) + np.array([0.3, -0.2, 0.2, 0.0, 0.1, 0.0])
    driver.write_command(target, 0.01)
    for _ in range(30):  # 3 s
        now[0] += 0.1
        state = driver.read_state()
    np.testing.assert_allclose(state.position[:6], target, atol=0.03)  # a position-controlled arm gets there
    assert state.position[6] == pytest.approx(0.01, abs=0.005)
    assert state.stamp > start.stamp
    with pytest.raises(DriverError, match="5 joint positions, the robot has 6"):
        driver.write_command(target[:5])
    with pytest.raises(DriverError, match="not finite"):
        driver.write_command(np.full(6, np.nan))
    driver.close()


def test_unknown_driver_kind_and_bad_arguments_are_one_line_errors() -> None:
    spec = load_robot_spec("arm6")
    with pytest.raises(ValueError, match="unknown driver 'dynamixel'; known: kinematic, sim"):
        make_driver(spec, {"kind": "dynamixel"})
    with pytest.raises(ValueError, match=r"driver 'kinematic': .*unexpected keyword argument 'port'"):
        make_driver(spec, {"kind": "kinematic", "port": "/dev/ttyUSB0"})


def test_driver_node_serves_the_robot_and_refuses_what_it_cannot_execute(start_node, test_node: Node) -> None:
    start_node("driver", "robot=arm6", "driver.kind=kinematic")
    states: list[JointState] = []
    status: list[dict] = []
    test_node.create_subscription("/joint_states", JointState, states.append)
    test_node.create_subscription("/driver/status", String, lambda m: status.append(json.loads(m.data)), qos="latched")
    arm = test_node.create_publisher("/arm_controller/commands", Float64MultiArray)
    grip = test_node.create_publisher("/gripper_controller/commands", Float64MultiArray)
    assert test_node.spin_until(lambda: len(states) > 5 and bool(status), 30), "no /joint_states from the driver"
    home = np.array(states[-1].position[:6])
    target = home + 0.2
    for _ in range(3):  # until the node has matched our publishers
        arm.publish(Float64MultiArray(data=target))
        grip.publish(Float64MultiArray(data=np.array([0.02])))
        test_node.spin(0.3)
    arm.publish(Float64MultiArray(data=np.full(6, np.nan)))
    arm.publish(Float64MultiArray(data=np.zeros(4)))
    assert test_node.spin_until(lambda: status[-1]["refused"] >= 2, 10), status[-1]
    assert test_node.spin_until(lambda: np.abs(states[-1].position[:6] - target).max() < 1e-3, 10), (
        states[-1].position,
        target,
    )
    np.testing.assert_allclose(states[-1].position[:6], target, atol=1e-3)  # the bad commands moved nothing
    assert states[-1].position[6] == pytest.approx(0.02, abs=1e-3)
    assert status[-1]["written"] >= 2 and status[-1]["robot"] == "arm6"
