"""How the ``asyncsnn`` program ends on Ctrl-C: one line, exit status 130, quiet on a second
Ctrl-C while Python shuts down. Imports nothing heavy: the package imports it first, so that a
Ctrl-C while torch loads is taken too."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import NoReturn

_NAMES = ("asyncsnn", "asyncsnn.cli", "asyncsnn.__main__")


def running_as_program() -> bool:
    """Whether this process is the ``asyncsnn`` command (the console script, or ``python -m
    asyncsnn`` as torchrun starts it), not a program that imports asyncsnn."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("asyncsnn", "asyncsnn.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return any(a == "-m" and b in _NAMES for a, b in zip(argv, argv[1:], strict=False))


def exit_interrupted(message: str = "interrupted") -> NoReturn:
    """Say ``message`` on stderr and exit with 130. In the program, a further Ctrl-C is then
    ignored, so that none lands in an exit handler (Python would print "Exception ignored in
    atexit callback" and a traceback)."""
    if running_as_program() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(message, file=sys.stderr, flush=True)
    sys.exit(130)
