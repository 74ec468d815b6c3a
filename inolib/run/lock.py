"""One writer per run folder: an advisory lock on ``OUT/.lock`` that the operating system drops with its process.

Two ``ino train`` runs on the same ``--out`` would interleave their checkpoints and logs. The first one to
start holds ``fcntl.flock`` on ``OUT/.lock`` (its pid written inside, for the message); the second gets a
:class:`RunFolderBusy` error naming the folder and the holder. A killed process (even ``kill -9``) leaves no
stuck lock: the kernel releases ``flock`` locks when the holder's file descriptors close.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None


class RunFolderBusy(OSError):
    """Another process (or another object in this process) is writing to the run folder."""


class RunLock:
    """Exclusive lock on ``folder/.lock``; :meth:`acquire` is idempotent, :meth:`release` too."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunFolderBusy` naming the folder and the holder's pid."""
        if self._file is not None:
            return self
        if fcntl is None:
            warnings.warn(f"no file locking on this system: nothing stops a second run from writing to "
                          f"{self.path.parent}", stacklevel=2)
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            own = " (this process: close the other Trainer first)" if holder == str(os.getpid()) else ""
            raise RunFolderBusy(f"{self.path.parent} is in use by another training run (pid {holder}){own}; "
                                "wait for it to finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __del__(self):
        self.release()
