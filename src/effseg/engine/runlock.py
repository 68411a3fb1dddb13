"""One writer per run folder: ``<run>/.lock``, created atomically with its content (a temp file
hard-linked to ``.lock``: it fails when the lock exists, like ``O_CREAT | O_EXCL``).

The lock file holds ``{"pid", "host", "started"}`` of its holder. Under torchrun only
rank 0 takes it (one lock per job). A lock whose holder is a dead process on this
host (a killed run, a torchrun worker that was restarted) is stale: it is taken over
with a note. A live holder, or a holder on another host (which cannot be checked from
here), refuses the second writer with a one-line :class:`RunFolderLocked`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from effseg.errors import EffsegError
from effseg.fileio import output_errors

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

    def _create(self) -> bool:
        """Create the lock with its content in one step: the holder record is written to a temp
        file that is then hard-linked to ``.lock`` (``link`` fails if ``.lock`` exists, like
        ``O_EXCL``), so no reader ever sees an empty lock and a full disk leaves none behind.
        Returns False when the lock exists. File systems without hard links fall back to
        ``O_CREAT | O_EXCL`` (the lock is removed again if writing its record fails)."""
        record = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
        )
        what = "the run folder's lock"
        with output_errors(self.path, what):
            fd, tmp = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=self.run_dir)
            try:
                os.fchmod(fd, 0o644)  # readable by other users' runs (mkstemp makes 0600 files)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(record)
                try:
                    os.link(tmp, self.path)
                    return True
                except FileExistsError:
                    return False
                except OSError as err:
                    if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        with output_errors(self.path, what):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(record)
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
        return True

    def acquire(self) -> str | None:
        """Take the lock; returns a one-line note when a stale lock was taken over.

        Raises:
            RunFolderLocked: another live process (or a process on another host) holds it.
            OutputError: the lock cannot be written (read-only folder, full disk, no permission).
        """
        note = None
        for _ in range(3):
            if self._create():
                self.held = True
                return note
            holder = self._holder()
            if holder is None:  # released between our two calls: try again
                continue
            pid, host = holder.get("pid"), holder.get("host")
            if not holder:  # being written by an older effseg right now, or garbage
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
        raise RunFolderLocked(f"run folder {self.run_dir}: could not take its lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock if this object holds it (and it is still ours)."""
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
