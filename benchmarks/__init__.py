"""Speed and quality benchmarks that print tables (python -m benchmarks.<name>)."""
