"""torchrun with the exit status of a single process: 128 + the signal after a clean stop.

    python tools/torchrun.py [torchrun options] tools/train.py CONFIG ...

The same arguments as the ``torchrun`` command, run by the same code
(``torch.distributed.run``). On SIGTERM or Ctrl-C torchrun passes the signal on to the
training processes, which stop cleanly after writing latest.pth, and then exits with status
1 and a ``SignalException`` traceback of its own. This launcher exits as one
``tools/train.py`` process does: one line, status 128 + the signal number (143 for SIGTERM,
130 for Ctrl-C). A process that fails keeps torchrun's report, with status 1.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["run"]


def run(argv: list[str] | None = None) -> int:
    """Run torchrun with `argv` (default: the command line); returns the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    except SignalException as stop:
        name = signal.Signals(stop.sigval).name
        print(
            f"torchrun stopped by {name}: it passed the signal on to every process, which "
            "stop after their iteration (training writes latest.pth; continue with --resume)",
            file=sys.stderr,
        )
        return 128 + int(stop.sigval)
    except ChildFailedError:
        return 1  # torchrun has printed which process failed and why
    return 0
