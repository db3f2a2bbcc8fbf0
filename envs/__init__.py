"""Simulation: the built-in tabletop suite, scripted experts, the env registry, evaluation."""
