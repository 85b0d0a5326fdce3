"""Stop signals during training: SIGINT and SIGTERM set a flag the training loop checks between
steps, so it saves a checkpoint and stops; `TrainingInterrupted` then carries the signal to the
entry point (host/entry.py), which exits with 128 + its number, as a shell reports it."""
import signal
import types
from typing import Optional


class TrainingInterrupted(Exception):
    """Raised after a signal stopped training and its checkpoint was saved."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class StopOnSignal:
    """SIGINT / SIGTERM set `received`, which the loop checks between steps; a second one stops
    at once, as outside the loop."""

    def __init__(self) -> None:
        self.received = None

    def __enter__(self) -> "StopOnSignal":
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Optional[types.FrameType]) -> None:
        if self.received is not None:  # a second Ctrl+C: stop at once, as outside the loop
            previous = self.previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at this step...",
              flush=True)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
