"""Test and benchmark support: the NumPy and integer references, the Python plan executor, the
kernel harness, the fuzz corpus and loader test data, the benchmarks' shared helpers. The product never
imports it."""
