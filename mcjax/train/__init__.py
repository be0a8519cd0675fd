"""Compiled, vmapped training loops, checkpoints and metrics."""
