"""Benchmarks of Quiver against its peer engines, run on one machine, with their results."""
