"""Behaviour cloning baselines."""
