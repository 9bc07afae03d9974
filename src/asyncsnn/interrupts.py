"""Ctrl-C during training, taken at a safe point.

A training step is forward, backward and ``optimizer.step()`` plus the bookkeeping that marks
the batch done. Ctrl-C (SIGINT) in the middle of it, raised wherever Python happened to be,
could leave the update applied but the batch not marked done (a resume then applies it
twice), or land inside the compiled kernel (which cannot raise it cleanly). Under
:meth:`Interrupts.deferred`, Ctrl-C is instead *requested*: the training finishes the batch
(or validation batch) in flight, saves its state and stops at the next :meth:`Interrupts.check`.
A second Ctrl-C stops at once, except within the update itself and the writing of the state
(:meth:`Interrupts.critical`): the batch in flight is then lost and the state after the last
finished batch is kept.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupts:
    """Ctrl-C requests of one training (see the module docstring).

    >>> stops = Interrupts()
    >>> with stops.deferred():
    ...     stops.check()  # nothing requested: goes on
    >>> stops.requested
    0
    """

    def __init__(self, notice: bool = True) -> None:
        self.requested = 0
        self.notice = notice
        self._critical = False

    @contextmanager
    def deferred(self) -> Iterator[Interrupts]:
        """Within the block, Ctrl-C is requested rather than raised (only in the main thread;
        elsewhere the block changes nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A block that no Ctrl-C interrupts (the optimizer's update and the bookkeeping
        that marks the batch done, a checkpoint's write); a Ctrl-C within it, the second
        included, takes effect at the next :meth:`check`."""
        outer = self._critical
        self._critical = True
        try:
            yield
        finally:
            self._critical = outer

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` where Ctrl-C was requested."""
        if self.requested:
            raise KeyboardInterrupt

    @property
    def at_once(self) -> bool:
        """Whether a second Ctrl-C asked to stop at once (the batch in flight is lost)."""
        return self.requested >= 2

    def _handler(self, signum, frame) -> None:
        self.requested += 1
        if self.requested == 1:
            if self.notice:
                print(
                    "\nCtrl-C: stopping after this batch (press it again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        if not self._critical:
            raise KeyboardInterrupt
