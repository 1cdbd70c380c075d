"""Test-session set-up: headless MuJoCo rendering, chosen before any test module imports mujoco; SIGINT
reaching the processes the tests start; one torch thread for the policy tests; the ``slow`` marker on every test
that starts node processes (``make test-fast`` leaves those out; ``make test`` runs everything)."""

import os
import signal

import pytest

if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

# Started as a background job (`.ci/run &`), the suite inherits SIGINT ignored, and so would every process it
# starts: they would ignore the SIGINTs the tests send (realloop-collect ran all 500 episodes). A handler here
# is reset to the default in each child at exec, so the children get Python's KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


PROCESS_FIXTURES = {"start_node", "test_node"}  # real node processes and DDS discovery: seconds per test


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
