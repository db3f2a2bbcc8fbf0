"""One run per run folder (an exclusive lock), and stopping it cleanly on SIGINT/SIGTERM.

The lock is an `fcntl.flock` on `<run_dir>/.lock`, which the kernel releases when its holder
dies however it dies; the file keeps the holder's pid and host so that a second run can say
who holds it, and a run that finds a dead holder's record logs that it takes over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class RunDirBusy(RuntimeError):
    """Another live process trains in this run folder."""


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise RunDirBusy(
                f"run_dir {self.path.parent} is in use by {who}: two runs in one folder would mix their "
                "checkpoints. Wait for it, stop it, or choose another run_dir"
            ) from None
        previous = _read(fd)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            log.warning(
                "run_dir %s: taking over the lock left by pid %s on %s, which is no longer running",
                self.path.parent,
                previous.get("pid"),
                previous.get("host"),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder record behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def existing_checkpoints(checkpoint_dir: Path) -> list[str]:
    """Names of the checkpoints a run folder holds (latest, step_N)."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted(p.name for p in checkpoint_dir.iterdir() if p.name == "latest" or p.name.startswith("step_"))


@dataclass
class Interrupt:
    """While installed (the training loop), SIGINT/SIGTERM set `signal`; the loop saves at the
    end of the step and stops. A second SIGINT while saving raises KeyboardInterrupt at once."""

    signal: int = 0
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping "
            "(press Ctrl-C again to abort without saving)",
            signal.Signals(signum).name,
        )

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def agreed(self, world: int, device: torch.device) -> bool:
        """Whether any rank was interrupted (every rank must stop at the same step to save)."""
        if world == 1:
            return bool(self.signal)
        flag = torch.tensor([self.signal], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.signal = int(flag.item())
        return bool(self.signal)
