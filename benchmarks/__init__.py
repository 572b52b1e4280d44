"""Benchmarks: edis-jax against a PyTorch eager reference and the device's matmul peak.

Entry point: `python -m benchmarks.run [--quick]`. PyTorch is optional (the `bench` extra);
without it the reference columns are null.
"""
