"""Session-wide test set-up."""

import os


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
