"""Run tools/infer.py in this process under a memory limit and print what it cost, as JSON.

    python tests/infer_memory.py LIMIT_MB WARMUP_IMAGE -- INFER_ARGS...

The command first segments WARMUP_IMAGE (a small image: it loads the libraries and the
kernels), then limits the address space to what the process maps now plus LIMIT_MB
(0: no limit) and runs ``tools/infer.py INFER_ARGS``. It prints the exit code and the peak
resident memory above the resident memory before that run, in MB (``ru_maxrss``).
The limit is relative because torch maps far more address space than it touches.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from pathlib import Path

from segls.cli import infer

MB = 2**20


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmSize: mapped, VmRSS: resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main() -> None:
    """Warm up, limit, run; print {"code", "peak_mb"}."""
    limit_mb, warmup, separator, *argv = sys.argv[1:]
    assert separator == "--"
    config, checkpoint = argv[:2]
    with tempfile.TemporaryDirectory() as out:
        infer.run([config, checkpoint, warmup, "--out", out])
    resident = _status("VmRSS")
    if float(limit_mb) > 0:
        cap = _status("VmSize") + int(float(limit_mb) * MB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    code = infer.run(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"code": code, "peak_mb": round((peak - resident) / MB, 1)}))


if __name__ == "__main__":
    main()
