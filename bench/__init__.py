"""Benchmarks that print ratios against their limits (see DESIGN.md)."""
