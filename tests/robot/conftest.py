"""Fixtures for ROS 2 layer tests: real node processes on real Cyclone DDS over loopback, each test on its own
domain id so tests (and parallel sessions) never hear each other."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from realloop.robot.node import Node

# 1..232 are valid Cyclone domain ids; spread by pid so two pytest runs on one machine do not collide
_ids = itertools.count(100 + os.getpid() % 60)


@pytest.fixture
def arm6_variant(tmp_path: Path) -> Callable[..., Path]:
    """``arm6_variant(**changes)``: a copy of the arm6 spec with top-level ``changes`` (e.g. another workspace
    box) written to ``tmp_path``; returns its path."""
    from realloop.robot.spec import load_robot_spec

    def make(name: str = "arm6_variant.yaml", **changes: object) -> Path:
        base = load_robot_spec("arm6")
        raw = yaml.safe_load(base.source.read_text())
        raw["mjcf"] = str(base.mjcf)  # absolute: the copy lives elsewhere
        raw.update(changes)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


@pytest.fixture
def domain_id() -> int:
    return 100 + (next(_ids) - 100) % 130


def node_env(domain_id: int) -> dict[str, str]:
    env = dict(
        os.environ,
        ROS_DOMAIN_ID=str(domain_id),
        ROS_LOCALHOST_ONLY="1",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("MUJOCO_GL", "egl")
    return env


@pytest.fixture
def start_node(domain_id: int, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """``start_node(kind, "key=value", ..., ros_args=[...], stdin=fd, executable=[...])`` runs ``realloop-node
    KIND`` (or ``executable``) as a process on the test's domain; its output goes to ``tmp_path/<kind>N.log``
    (read with ``proc.log_text()``)."""
    procs: list[subprocess.Popen] = []

    def start(
        kind: str,
        *overrides: str,
        ros_args: list[str] | None = None,
        stdin: int = subprocess.DEVNULL,
        executable: list[str] | None = None,
    ) -> subprocess.Popen:
        log = tmp_path / f"{kind}{len(procs)}.log"
        cmd = [*(executable or [sys.executable, "-m", "realloop.robot.nodes", kind]), *overrides]
        if ros_args:
            cmd += ["--ros-args", *ros_args]
        fh = open(log, "w")  # noqa: SIM115 - closed with the process
        # a new session: a pty given as stdin is not its controlling terminal (Ctrl-C bytes are data), and
        # signals go by pid
        proc = subprocess.Popen(
            cmd, env=node_env(domain_id), stdin=stdin, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log_path = log
        proc.log_text = log.read_text
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def test_node(domain_id: int) -> Iterator[Node]:
    """An in-process node on the test's domain, for publishing inputs and observing outputs."""
    node = Node("pytest", transport="dds", domain_id=domain_id, localhost_only=True)
    yield node
    node.close()
