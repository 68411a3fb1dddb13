"""One writer per run folder: ``<run>/.lock``, created with ``O_CREAT | O_EXCL``.

The lock file holds ``{"pid", "host", "started"}`` of its holder. Under torchrun only
rank 0 takes it (one lock per job). A lock whose holder is a dead process on this
host (a killed run, a torchrun worker that was restarted) is stale: it is taken over
with a note. A live holder, or a holder on another host (which cannot be checked from
here), refuses the second writer with a one-line :class:`RunFolderLocked`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from effseg.errors import EffsegError

__all__ = ["LOCK_NAME", "RunFolderLocked", "RunLock"]

LOCK_NAME = ".lock"


class RunFolderLocked(EffsegError, RuntimeError):
    """Another process is writing into the run folder."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:  # a killed child not yet reaped by its parent is a zombie: it holds nothing any more
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """The lock of ``run_dir`` (``run_dir`` must exist before :meth:`acquire`)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def _holder(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> str | None:
        """Take the lock; returns a one-line note when a stale lock was taken over.

        Raises:
            RunFolderLocked: another live process (or a process on another host) holds it.
        """
        note = None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # released between our two calls: try again
                    continue
                pid, host = holder.get("pid"), holder.get("host")
                if not holder:  # being written by its holder right now, or garbage
                    age = time.time() - self.path.stat().st_mtime if self.path.exists() else 0.0
                    if age < 10:
                        time.sleep(0.2)
                        continue
                elif host != socket.gethostname() or not isinstance(pid, int) or _pid_alive(pid):
                    raise RunFolderLocked(
                        f"run folder {self.run_dir} is in use by process {pid} on host {host} "
                        f"(lock {self.path}, since {holder.get('started', '?')}); wait for it to end, "
                        "or delete the lock file if that process is gone"
                    ) from None
                who = f"process {pid} on {host}" if holder else "an unreadable lock file"
                note = f"took over the stale lock of {self.run_dir} left by {who} (no longer running)"
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    },
                    f,
                )
            self.held = True
            return note
        raise RunFolderLocked(f"run folder {self.run_dir}: could not take its lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock if this object holds it (and it is still ours)."""
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
