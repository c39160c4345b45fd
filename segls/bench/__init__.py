"""Benchmarks and experiments that measure segls, behind tools/bench_*.py and compare_smoothing.

`throughput` times training steps per speed switch, `loss_cpu` and `loss_gpu` the loss
against PyTorch's formulations (`losses`: their shared inputs and dense reference),
`memory` measures peaks, `report` writes the throughput table, and `smoothing` trains a
config at several ε and compares.
"""
