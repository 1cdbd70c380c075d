"""Test-session set-up: headless MuJoCo rendering, chosen before any test module imports mujoco; one torch
thread for the policy tests."""

import os

import pytest

if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True)
def _one_torch_thread_in_policy_tests(request: pytest.FixtureRequest):
    """Policy tests use tiny tensors: intra-op threads gain nothing, and on a shared 2-core machine they thrash."""
    if "policies" not in request.path.parts:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
