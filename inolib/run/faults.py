"""Rehearsing failures of a training run on purpose, to see the recovery work before a real run needs it.

    with nonfinite_loss(trainer, at_step=7):      step 7's loss is NaN: the run stops, the last good
        trainer.fit()                             checkpoint stays on disk, log.jsonl ends with a "nan" event
    with interrupt(trainer, at_step=5):           Ctrl-C (SIGINT) arrives during step 5: the trainer writes a
        trainer.fit()                             checkpoint after that step and raises TrainingInterrupted

Both patch one :class:`inolib.run.trainer.Trainer` object for the duration of the ``with`` block and restore it after;
nothing else changes, so what follows is exactly what the trainer does on a real NaN or a real Ctrl-C.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager


def _check(trainer, at_step: int) -> None:
    if not isinstance(at_step, int) or at_step < 1:
        raise ValueError(f"at_step must be a whole number >= 1 (steps count from 1), got {at_step!r}")
    if not hasattr(trainer, "criterion") or not hasattr(trainer, "step"):
        raise ValueError(f"trainer must be an inolib.run.trainer.Trainer, got {type(trainer).__name__}")


@contextmanager
def _wrapped_loss(trainer, at_step: int, act):
    _check(trainer, at_step)
    forward = trainer.criterion.forward

    def patched(*args, **kwargs):
        out = forward(*args, **kwargs)
        if trainer.step == at_step - 1:  # trainer.step counts the steps done: this is step at_step
            out = act(out)
        return out

    trainer.criterion.forward = patched
    try:
        yield trainer
    finally:
        del trainer.criterion.forward  # the class's forward again


def nonfinite_loss(trainer, at_step: int, value: float = float("nan")):
    """Make the loss of step ``at_step`` (1-based) ``value`` (NaN, or inf) while the block runs."""
    def poison(out: dict) -> dict:
        return {**out, "loss": out["loss"] * value}

    return _wrapped_loss(trainer, at_step, poison)


def interrupt(trainer, at_step: int, signum: int = signal.SIGINT):
    """Send ``signum`` (SIGINT as Ctrl-C does, or SIGTERM as a job scheduler does) to this process during step
    ``at_step`` (1-based) while the block runs. Needs the main thread, where the trainer catches the signal."""
    def send(out: dict) -> dict:
        os.kill(os.getpid(), signum)
        return out

    return _wrapped_loss(trainer, at_step, send)
