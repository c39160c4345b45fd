"""Measurement code that users never import: benchmarks, the GPU check, the development suite."""
