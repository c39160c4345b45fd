"""Session-wide test set-up."""

import os
import socket

import pytest
import torch

_DROPPED = pytest.StashKey[tuple[str, int]]()


def pytest_collection_modifyitems(config, items):
    """Run Triton kernel tests only in the TRITON_INTERPRET=1 child process, the rest outside it.

    The child is started by tests/test_losses_triton.py, which fails if any kernel test fails.
    """
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    unwanted = "triton_parent" if interpreted else "triton_child"
    dropped = [item for item in items if item.get_closest_marker(unwanted)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker(unwanted)]
    config.stash[_DROPPED] = (unwanted, len(dropped))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say what the "N deselected" of the summary line are, since no -k or -m asked for them."""
    unwanted, count = config.stash.get(_DROPPED, ("", 0))
    if count and unwanted == "triton_child":
        terminalreporter.write_line(
            f"{count} deselected = the Triton kernel tests, which tests/test_losses_triton.py "
            "runs in a TRITON_INTERPRET=1 child process (it fails if any of them fails)"
        )
    elif count:
        terminalreporter.write_line(
            f"{count} deselected = the tests that run outside the Triton interpreter"
        )


@pytest.fixture(autouse=True)
def restore_torch_globals():
    """Training and benchmarks set process-wide torch flags; put them back after each test."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network connection succeeds, and torch's and Hugging Face's caches are empty, so an
    example that would download weights fails."""

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("the examples must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
