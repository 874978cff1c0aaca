"""Benchmark scripts that produce the tables and plots in benchmarks/results/ (rasterizer speed, sparse-view quality)."""
