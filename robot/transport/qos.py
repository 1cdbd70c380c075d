"""QoS profiles: the three the stack uses, as plain data both transports translate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QoS:
    """Reliability, history depth and durability of a topic endpoint."""

    reliable: bool = True
    depth: int = 10
    transient_local: bool = False


SENSOR = QoS(reliable=False, depth=5)  # cameras, IMU: newest wins, never block the publisher
RELIABLE = QoS(reliable=True, depth=10)  # joint states and commands
CLOCK = QoS(reliable=False, depth=1)  # /clock
LATCHED = QoS(reliable=True, depth=1, transient_local=True)  # late joiners get the last sample (status)

PROFILES = {"sensor": SENSOR, "reliable": RELIABLE, "clock": CLOCK, "latched": LATCHED}


def qos_profile(name: str | QoS) -> QoS:
    """A profile by name (``sensor``, ``reliable``, ``clock``, ``latched``) or the profile itself."""
    if isinstance(name, QoS):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown QoS profile {name!r}; use one of {sorted(PROFILES)}") from None
