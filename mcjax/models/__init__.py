"""Flax Linen models of mcjax."""
