"""Tests of device, precision, seeding and determinism choices."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from segls import runtime
from segls.config import ConfigError, RuntimeConfig


def test_resolve_device():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected
    with pytest.raises(ConfigError, match="runtime.device='tpu'"):
        runtime.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_says_what_to_do():
    with pytest.raises(ConfigError, match="use runtime.device=cpu"):
        runtime.resolve_device("cuda:0")


def test_amp_dtypes_on_cpu():
    cpu = torch.device("cpu")
    assert runtime.amp_dtype("off", cpu) is None
    assert runtime.amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="runtime.amp=bf16"):
        runtime.amp_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="'fp8'"):
        runtime.amp_dtype("fp8", cpu)


def test_configure_applies_threads_determinism_and_seed():
    cfg = RuntimeConfig(device="cpu", seed=5, deterministic=True, num_threads=1)
    assert runtime.configure(cfg) == torch.device("cpu")
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    first = random.random(), np.random.rand(), torch.rand(1).item()
    runtime.configure(RuntimeConfig(device="cpu", seed=5, deterministic=False))
    assert not torch.are_deterministic_algorithms_enabled()
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


@given(st.integers(0, 2**32 - 1), st.integers(0, 10**6))
def test_derived_seed_is_a_fixed_32_bit_function(seed, epoch):
    value = runtime.derived_seed(seed, epoch)
    assert 0 <= value < 2**32
    assert value == runtime.derived_seed(seed, epoch)
    assert value != runtime.derived_seed(seed, epoch + 1) or value != runtime.derived_seed(
        seed, epoch + 2
    )
