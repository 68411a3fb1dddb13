"""The run folder: created, resumed or restarted under its lock, and its ``config.yaml``.

Rank 0 only. Rules (``effseg train --resume / --force``):

- a new or empty folder: a new run (also with ``--resume``: nothing to resume, said so);
- an existing run without ``--resume`` / ``--force``: refused;
- ``--resume`` with ``last.pt``: resumed (half-written ``*.tmp`` checkpoints are removed);
- ``--resume`` of a run killed before its first checkpoint (a valid ``config.yaml``, no
  ``last.pt``): started over, said so;
- ``--force``: the folder's contents are deleted (only if it looks like a run folder);
- a start that fails before the run wrote anything (a missing data root, a bad config value)
  leaves no empty folder behind: the lock of a folder this call created or emptied removes it
  on release when it is still empty (:class:`_RunDirLock`).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import yaml

from effseg.config import Config, config_from_dict, save_config
from effseg.engine import distributed as du
from effseg.engine.checkpoint import RUN_FOLDER_FILES, remove_temp_files, run_folder_weights
from effseg.engine.runlock import LOCK_NAME, RunLock
from effseg.errors import CheckpointError, ConfigError, EffsegError
from effseg.fileio import make_dir

__all__ = ["RUN_FOLDER_FILES", "open_run_dir", "prepare_run_dir", "run_folder_weights", "write_config"]

_MARKERS = ("config.yaml", "last.pt", "best.pt", "log.jsonl")
# RUN_FOLDER_FILES / run_folder_weights (which file a run folder stands for) live in
# effseg.engine.checkpoint, so that load_model follows the same rule; re-exported here.


def _has_run_config(run_dir: Path) -> bool:
    """Whether ``run_dir/config.yaml`` is an effseg config (the trace of a started run)."""
    path = run_dir / "config.yaml"
    try:
        config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, yaml.YAMLError, EffsegError):
        return False
    return True


def _clear(run_dir: Path) -> None:
    """Delete the folder's contents, except the lock we hold."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class _RunDirLock(RunLock):
    """The run folder's lock. When this start created or emptied the folder (``fresh``), releasing
    the lock also removes the folder if nothing was written into it (the start failed), so that no
    empty ``runs/<name>/`` is left to be mistaken for a run later ("neither last.pt nor best.pt").
    The empty parent folders the start created (``runs/``) go too."""

    fresh = False
    made_parents: tuple[Path, ...] = ()  # nearest first

    def release(self) -> None:
        super().release()
        if self.fresh:
            with contextlib.suppress(OSError):  # not empty, or gone: nothing to do
                self.run_dir.rmdir()
                for parent in self.made_parents:
                    parent.rmdir()


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> tuple[bool, RunLock, list[str]]:
    """Lock ``run_dir`` and make it ready; returns ``(resume for real, the lock, notes to print)``.

    Raises:
        RunFolderLocked: another process writes into the folder.
        ConfigError: the folder holds a run and neither ``--resume`` nor ``--force`` was given,
            or ``--force`` on a folder that is not a run folder.
        CheckpointError: ``--resume`` on a non-empty folder that holds no effseg run.
    """
    created = not run_dir.exists()
    made_parents = tuple(p for p in run_dir.parents if not p.exists())
    make_dir(run_dir, "the run folder")  # a read-only or full disk, a file in the way: one line
    lock = _RunDirLock(run_dir)
    lock.fresh, lock.made_parents = created, made_parents
    notes: list[str] = []
    try:
        note = lock.acquire()
        if note:
            notes.append(note)
        contents = [p for p in run_dir.iterdir() if p.name != LOCK_NAME]
        if resume:
            if (run_dir / "last.pt").is_file():
                removed = remove_temp_files(run_dir)
                if removed:
                    names = ", ".join(p.name for p in removed)
                    notes.append(f"removed {len(removed)} half-written checkpoint file(s) of a kill: {names}")
                return True, lock, notes
            if contents and not _has_run_config(run_dir):
                raise CheckpointError(
                    f"{run_dir}: nothing to resume (no last.pt), and it holds no effseg run (no valid "
                    "config.yaml); use another --run-dir"
                )
            if contents:
                notes.append(
                    f"nothing to resume in {run_dir}: the run stopped before its first checkpoint "
                    "(no last.pt); starting it over"
                )
                _clear(run_dir)
                lock.fresh = True
            else:
                notes.append(f"nothing to resume in {run_dir} (no run there yet); starting a new run")
            return False, lock, notes
        if contents and not force:
            raise ConfigError(
                f"run folder {run_dir} already exists; use --resume to continue it or --force to overwrite it"
            )
        if contents:
            if not any((run_dir / n).exists() for n in _MARKERS):
                raise ConfigError(
                    f"{run_dir} is not empty and not an effseg run folder; refusing to delete it"
                )
            _clear(run_dir)
            lock.fresh = True
        return False, lock, notes
    except BaseException:
        lock.release()
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict) and prefix == "":
            keys += _config_diff(a, b, f"{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def write_config(cfg: Config, run_dir: Path, resume: bool) -> None:
    """Write ``run_dir/config.yaml``; when resuming, warn about keys that changed since."""
    path = run_dir / "config.yaml"
    if resume and path.exists():
        try:
            old = config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8"))).to_dict()
            changed = _config_diff(old, cfg.to_dict())
        except EffsegError:
            changed = ["(unreadable config.yaml)"]
        if changed:
            print(f"effseg: warning: resuming with a changed config: {', '.join(changed)}")
    save_config(cfg, path)


def open_run_dir(run_dir: Path, info: du.DistInfo, resume: bool, force: bool) -> tuple[bool, RunLock | None]:
    """Rank 0 locks and prepares the run folder; every rank learns whether the run resumes."""
    err: Exception | None = None
    lock = None
    if info.is_main:
        try:
            resume, lock, notes = prepare_run_dir(run_dir, resume, force)
            for note in notes:
                print(f"effseg: note: {note}")
        except EffsegError as e:
            err = e
    if du.broadcast_flag(err is not None, info.device):
        raise err if err is not None else ConfigError(f"rank 0 could not prepare {run_dir}")
    if info.distributed:
        resume = du.broadcast_float(float(resume), info.device) > 0.5
    return resume, lock
