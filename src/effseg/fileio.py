"""Writing files: atomically, and one rule for every way a write can fail.

Every file effseg writes (checkpoints, eval outputs, exports, predictions, the export cache, the
run lock) goes through here:

- :func:`atomic_path` yields a temporary path in the destination's own folder
  (``.<name>.<random>.tmp<suffix>``: the same suffix, so writers that choose a format by the file
  extension still work) and renames it onto the destination (``os.replace``) only when the block
  ends without an exception. Otherwise the temporary file is removed and a file that was at the
  destination before is left as it was. A kill mid-write leaves at most the hidden temporary file.
- :func:`atomic_write_bytes` / :func:`atomic_write_text` write a whole file that way;
  :func:`atomic_savefig` a matplotlib figure (the format from the file's suffix, as usual).
- :func:`atomic_files` writes several files that belong together (a report and its figures, the
  evaluation results): all appear when the block ends cleanly, none otherwise, and folders it
  created for them are removed again when nothing was written.
- :func:`append_line` adds one line to a log (``log.jsonl``): a failed write is cut back, so the
  file holds whole lines only (a kill mid-write can at worst leave a partial last line, which
  readers skip).
- The one rule for output failures: no space left (``ENOSPC``, ``EDQUOT``), a read-only file
  system (``EROFS``), no permission (``EACCES``, ``EPERM``) and a path through a file
  (``ENOTDIR``) become one :class:`OutputError` line naming the path, what was being written and
  what to do (:func:`describe_output_error`). A writer that fails with something else while the
  disk is full or read-only (torch's and onnx's C++ writers raise ``RuntimeError``) gets the same
  line: the folder is examined with ``statvfs``.
- :func:`writable_dir` creates a folder and checks that a file can be written into it, so a command
  refuses an unwritable output before it spends minutes computing what it would write there;
  :func:`check_writable_dir` does the same check but leaves no folder behind (the folder is made
  when the results are written, so a command that fails later leaves no empty folder).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from effseg.errors import EffsegError

__all__ = [
    "OUTPUT_ERRNOS",
    "AtomicFiles",
    "AtomicTarget",
    "OutputError",
    "append_line",
    "atomic_files",
    "atomic_path",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_writable_dir",
    "describe_os_error",
    "describe_output_error",
    "make_dir",
    "missing_dirs",
    "output_errors",
    "remove_empty_dirs",
    "writable_dir",
]

#: The errno values :func:`describe_output_error` explains (anything else keeps the OS's words).
OUTPUT_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
)
_MIN_FREE_BYTES = 1 << 20  # a folder with less room than this is treated as full


class OutputError(EffsegError, RuntimeError):
    """A file or folder could not be written (full disk, read-only, no permission, bad path)."""


def _blocking_file(path: Path) -> Path | None:
    """The first existing component of ``path`` (itself included) that is a file, not a folder."""
    for part in [path, *path.parents][::-1]:
        if part.exists() and not part.is_dir():
            return part
    return None


def _reason(code: int | None, path: Path, err: BaseException | None) -> tuple[str, str]:
    """``(what went wrong, what to do)`` for an errno."""
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device", "free some space there or write somewhere else"
    if code == errno.EROFS:
        return "the file system is read-only", "choose a folder on a writable disk"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", "choose a folder you may write to, or change its permissions"
    if code == errno.ENOTDIR:
        blocker = _blocking_file(path)
        where = (
            f"{blocker} is a file, not a folder"
            if blocker is not None
            else "a part of the path is not a folder"
        )
        return where, "choose another path"
    if code == errno.EISDIR:
        return "it is a folder", "give a file name"
    text = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [type(err).__name__])[0]
    return str(text), "check the path and the disk"


def describe_output_error(path: str | os.PathLike, what: str, err: BaseException, kept: str = "") -> str:
    """The one line for a failed write of ``what`` to ``path``: ``PATH: cannot write WHAT: REASON;
    ADVICE (KEPT)``. ``kept`` says what is intact (e.g. ``the previous best.pt is intact``)."""
    path = Path(path)
    code = getattr(err, "errno", None) if isinstance(err, OSError) else _diagnose(path)
    reason, advice = _reason(code, path, err)
    return f"{path}: cannot write {what}: {reason}; {advice}" + (f" ({kept})" if kept else "")


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` that reached the command line without a context (the last
    resort of the CLI): ``PATH: REASON; ADVICE``."""
    path = Path(err.filename) if err.filename else Path(".")
    reason, advice = _reason(err.errno, path, err)
    return f"{err.filename}: {reason}; {advice}" if err.filename else f"{reason}; {advice}"


def _diagnose(path: Path) -> int | None:
    """Why a write under ``path`` may have failed when the writer did not say with an OSError:
    ``EROFS`` for a read-only file system, ``ENOSPC`` for (almost) no free space, else None."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < _MIN_FREE_BYTES:
        return errno.ENOSPC
    return None


def _is_output_failure(err: BaseException, path: Path) -> bool:
    if isinstance(err, OSError):
        return True
    return _diagnose(path) is not None


@contextlib.contextmanager
def output_errors(path: str | os.PathLike, what: str, kept: str = "") -> Iterator[None]:
    """Turn an ``OSError`` (or a writer's error on a full or read-only disk) raised in the block
    into one :class:`OutputError` line about writing ``what`` to ``path``."""
    try:
        yield
    except EffsegError:
        raise
    except Exception as err:
        if not _is_output_failure(err, Path(path)):
            raise
        raise OutputError(describe_output_error(path, what, err, kept)) from None


def make_dir(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """``mkdir -p path``; a path that is (or passes through) a file, or a folder that cannot be
    created, is one :class:`OutputError` line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{path}: cannot write {what} there: it is a file, not a folder; choose another path"
        )
    with output_errors(path, what):
        path.mkdir(parents=True, exist_ok=True)
    return path


def writable_dir(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create ``path`` if needed and check that a file can be written in it (a probe file is made
    and removed); every failure is one :class:`OutputError` line."""
    path = make_dir(path, what)
    with output_errors(path, what):
        fd, probe = tempfile.mkstemp(prefix=".effseg-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    return path


def missing_dirs(path: str | os.PathLike) -> list[Path]:
    """The folders of ``path`` (itself included) that do not exist yet, deepest first: what a
    ``mkdir -p path`` would create."""
    path = Path(path)
    return [p for p in [path, *path.parents] if not p.exists()]


def remove_empty_dirs(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; one that holds something, or is
    gone, is left quietly."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_writable_dir(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """:func:`writable_dir`'s check -- the folder can be created and a file written in it -- that
    leaves nothing behind: folders it had to create for the probe are removed again. For a command
    that checks its output first and writes it only at the end (``effseg eval``), so that a run
    that fails in between leaves no empty folder."""
    made = missing_dirs(path)
    try:
        return writable_dir(path, what)
    finally:
        remove_empty_dirs(made)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes 0600 files)


class AtomicTarget:
    """A temporary file beside ``path`` that becomes ``path`` on :meth:`commit` (``os.replace``) or
    disappears on :meth:`discard`; for writers that live longer than one block (a video). Most code
    uses :func:`atomic_path`. Failures are one :class:`OutputError` line (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike, what: str = "the file", *, fsync: bool = False) -> None:
        self.path, self.what, self.fsync = Path(path), what, fsync
        self.kept = f"the previous {self.path.name} is intact" if self.path.is_file() else ""
        if self.path.is_dir():
            raise OutputError(f"{self.path}: cannot write {what} there: it is a folder; give a file name")
        make_dir(self.path.parent, what)
        with self.errors():
            fd, name = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=f".tmp{self.path.suffix}", dir=self.path.parent
            )
            os.close(fd)
        self.tmp = Path(name)

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """:func:`output_errors` for this file."""
        return output_errors(self.path, self.what, self.kept)

    def commit(self) -> Path:
        """Give the temporary file the default permissions, flush it (``fsync``) and rename it onto
        ``path``; on failure it is removed."""
        try:
            with self.errors():
                os.chmod(self.tmp, _FILE_MODE)
                if self.fsync:
                    fd = os.open(self.tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                os.replace(self.tmp, self.path)
        finally:
            self.discard()
        return self.path

    def discard(self) -> None:
        """Remove the temporary file (nothing happens to ``path``)."""
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "the file", *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` (``os.replace``).

    On any exception the temporary file is removed and ``path`` keeps what it held; a write failure
    (see the module docstring) is raised as one :class:`OutputError` line naming ``path`` and
    ``what``. ``fsync`` flushes the file to the disk before the rename (checkpoints, exports).
    """
    target = AtomicTarget(path, what, fsync=fsync)
    try:
        with target.errors():
            yield target.tmp
        target.commit()
    finally:
        target.discard()


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes | memoryview, what: str = "the file", *, fsync: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, what, fsync=fsync) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike, text: str, what: str = "the file", *, fsync: bool = False
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), what, fsync=fsync)


def atomic_savefig(fig: Any, path: str | os.PathLike, what: str = "the figure", **kwargs: Any) -> Path:
    """``fig.savefig(path, **kwargs)`` atomically (see :func:`atomic_path`; the temporary file keeps
    the suffix, so matplotlib picks the format from it as usual); the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, what) as tmp:
            fig.savefig(tmp, **kwargs)
    finally:
        plt.close(fig)
    return Path(path)


class AtomicFiles:
    """Files written together (see :func:`atomic_files`): each goes to a temporary file beside its
    destination; :meth:`commit` renames them all, :meth:`discard` removes them all together with
    the folders made for them that stayed empty."""

    def __init__(self) -> None:
        self.targets: dict[Path, AtomicTarget] = {}
        self.made: list[Path] = []  # folders created for the targets, deepest first

    def path(self, dest: str | os.PathLike, what: str = "the file") -> Path:
        """The temporary path to write ``dest`` to (the same one when asked again)."""
        dest = Path(dest)
        if dest not in self.targets:
            made = missing_dirs(dest.parent)
            self.targets[dest] = AtomicTarget(dest, what)
            self.made = made + [d for d in self.made if d not in made]
        return self.targets[dest].tmp

    @contextlib.contextmanager
    def writing(self, dest: str | os.PathLike, what: str = "the file") -> Iterator[Path]:
        """Yield the temporary path of ``dest``; a write failure in the block is one
        :class:`OutputError` line about ``dest``."""
        tmp = self.path(dest, what)
        with self.targets[Path(dest)].errors():
            yield tmp

    def write_bytes(self, dest: str | os.PathLike, data: bytes | memoryview, what: str = "the file") -> Path:
        with self.writing(dest, what) as tmp, open(tmp, "wb") as f:
            f.write(data)
        return Path(dest)

    def write_text(self, dest: str | os.PathLike, text: str, what: str = "the file") -> Path:
        return self.write_bytes(dest, text.encode("utf-8"), what)

    def savefig(self, fig: Any, dest: str | os.PathLike, what: str = "the figure", **kwargs: Any) -> Path:
        """``fig.savefig`` to ``dest``'s temporary file; the figure is closed."""
        import matplotlib.pyplot as plt

        try:
            with self.writing(dest, what) as tmp:
                fig.savefig(tmp, **kwargs)
        finally:
            plt.close(fig)
        return Path(dest)

    def commit(self) -> None:
        """Rename every temporary file onto its destination (in the order they were begun)."""
        try:
            for target in self.targets.values():
                target.commit()
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the temporary files not renamed yet, then the folders made for them if empty."""
        for target in self.targets.values():
            target.discard()
        remove_empty_dirs(self.made)


@contextlib.contextmanager
def atomic_files() -> Iterator[AtomicFiles]:
    """Write several files that belong together::

        with atomic_files() as files:
            files.write_text(out / "eval.json", text, "the evaluation results")
            files.savefig(fig, out / "confusion_matrix.png", "the confusion matrix")

    When the block ends cleanly every file is renamed onto its destination; on any exception none
    is, the temporary files are removed, the files that were there before are left as they were and
    folders created for the new files are removed again if empty. Failures are one
    :class:`OutputError` line naming the file (see the module docstring).
    """
    files = AtomicFiles()
    try:
        yield files
    except BaseException:
        files.discard()
        raise
    files.commit()


def append_line(path: str | os.PathLike, line: str, what: str = "the log") -> None:
    """Append ``line`` and a newline to ``path`` (UTF-8) in one write. A failed write (a full disk)
    is cut back to the previous end of the file, so the file keeps whole lines only, and raised as
    one :class:`OutputError` line; only a kill during the write itself can leave a partial last
    line, which readers of the log skip."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with output_errors(path, what), open(path, "ab", buffering=0) as f:
        end = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # a short write (the disk filling up) is followed by the rest, or its error
                view = view[f.write(view) :]
        except BaseException:
            with contextlib.suppress(OSError):
                f.truncate(end)
            raise
