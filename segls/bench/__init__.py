"""Benchmarks and experiments that measure segls, behind tools/bench_*.py.

`throughput` times training steps per speed switch; `loss_cpu` and `loss_gpu` time the loss
against PyTorch's formulations, and `upsample` the loss with bilinear upsampling fused in
against interpolating first (`losses`: what they share: inputs, the dense reference, steps
timed in turns, child processes); `memory` measures peaks, `report` writes the throughput
table, `startup` times how fast a command reports a bad config, and `tensorboard_view`
checks in headless Chromium what TensorBoard shows of runs. `syncs` counts a training run's host syncs per iteration, and
`gpu_check` is everything a first CUDA device must show, behind tools/gpu_check.py.
"""
