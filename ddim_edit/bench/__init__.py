"""Benchmarks on the toy world: every edit scored against its exact ground truth."""
