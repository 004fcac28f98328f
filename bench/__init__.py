"""Benchmarks: `make bench`. Speed and memory goals are measured here, never by timed tests."""
