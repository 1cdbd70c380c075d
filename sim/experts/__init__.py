"""Scripted experts: demonstrations for the sim tasks (sim/envs). `make_expert(env)` picks the task's expert."""

from realloop.sim.experts.base import EXPERTS, Expert, make_expert

__all__ = ["EXPERTS", "Expert", "make_expert"]
