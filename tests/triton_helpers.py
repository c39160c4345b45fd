"""Helpers of the Triton kernel tests: the interpreter's child run, and compiling for sm_90."""

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def child_test_files() -> list[Path]:
    """The test files that hold triton_child tests (kernel tests run under the interpreter)."""
    return sorted(path for path in TESTS.glob("test_*.py") if "triton_child" in path.read_text())


def assert_kernel_tests_pass() -> None:
    """Run every file's triton_child tests in one pytest child with TRITON_INTERPRET=1.

    Triton reads TRITON_INTERPRET once, when it is first imported, so the kernel tests cannot
    run in the parent, where earlier tests may have imported it (torch.compile does).
    """
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    files = [str(path) for path in child_test_files()]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "triton_child"]
    command += files
    result = subprocess.run(command, cwd=TESTS.parent, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


def compile_for_sm90(kernel, args: list, meta: dict):
    """The kernel compiled by the real compiler (no GPU needed) for these launch arguments.

    The interpreter is lenient; the compiler is not. ``meta`` includes num_warps.
    """
    import triton
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import native_specialize_impl

    meta = dict(meta)
    num_warps = meta.pop("num_warps")
    names = [param.name for param in kernel.params]
    signature, constants, attrs = {}, {}, {}
    for index, (name, value) in enumerate(zip(names, args + list(meta.values()), strict=True)):
        if name in meta:
            signature[name], constants[(index,)] = "constexpr", value
            continue
        kind, key = native_specialize_impl(BaseBackend, value, False, True, True)
        signature[name] = kind
        if kind == "constexpr":
            constants[(index,)] = value
        elif key == "D":
            attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}
    )
