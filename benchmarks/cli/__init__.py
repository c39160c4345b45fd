"""The command lines behind tools/bench_*.py, tools/gpu_check.py and tools/check_tensorboard.py.

``python tools/<name>.py`` runs ``benchmarks.cli.<name>.run``; tests call the same functions.
"""
