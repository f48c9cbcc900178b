"""Benchmarks: commands that print figures as JSON (never timed tests)."""
