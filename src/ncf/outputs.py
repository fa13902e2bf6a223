"""Folders `ncf` writes: one writer at a time, ownership checked when it matters, leftovers.

Every command that writes a folder (a prepared folder, a run directory, a synthetic set, an
experiment report, the download cache) follows the same rules:

* **One ncf process per output.** :func:`output_lock` takes an advisory lock (``flock``) on a
  hidden file beside the output, ``.NAME.ncf-lock``. A second ``ncf`` process on the same
  output is refused with one line naming the process holding it, or waits for it where
  waiting is what a user wants (a shared cache). The lock dies with its process, so a killed
  run never blocks the next one; the file is removed when the lock is released.
* **Ownership at the moment it matters.** :func:`replace_folder` and :func:`remove_folder`
  check, right before they rename or delete, that the folder holds only files `ncf` wrote
  (the caller says which), and refuse otherwise.
* **Leftovers of killed runs.** Once the lock is held no other ``ncf`` process can be
  using an output's temporary folders, so :func:`reclaim` removes those an earlier killed
  run left (after checking their contents, naming any it leaves alone).

:func:`checkpoint` marks the points where a folder is replaced or removed; tests set
:data:`HOOK` to stop a command there (fault injection) instead of racing it with sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ncf.errors import NcfError, printable

try:  # POSIX; elsewhere outputs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: Called as ``HOOK(point, path)`` at every :func:`checkpoint` (tests only; ``None`` otherwise).
HOOK: Callable[[str, Path], None] | None = None

Owned = Callable[[Path], bool]


def checkpoint(point: str, path: Path) -> None:
    """A named point just before ``path`` is replaced or removed (see :data:`HOOK`)."""
    if HOOK is not None:
        HOOK(point, path)


def notice(text: str) -> None:
    """A one-line note on stderr (leftovers removed, waiting for a lock)."""
    print(f"ncf: {printable(text)}", file=sys.stderr, flush=True)


def resolve_output(path: str | Path) -> Path:
    """``path`` made absolute, with a symbolic link as its last part replaced by its target.

    A folder behind a link is written in place (the link keeps pointing at it); a link to
    nothing is refused, since following it would create a folder somewhere else.
    """
    p = Path(path).absolute()
    if p.is_symlink():
        target = Path(os.path.realpath(p))
        if not target.exists():
            raise NcfError(f"{p}: a symbolic link to {target}, which does not exist: give the "
                           "folder itself")
        return target
    return p


# ------------------------------------------------------------------------------ locks
@dataclass
class _Held:
    fd: int
    lock: Path
    count: int = 1
    made: list[Path] = field(default_factory=list)


_HELD: dict[Path, _Held] = {}


def lock_path(out: Path) -> Path:
    """The lock file of output ``out``: ``.NAME.ncf-lock`` in its parent folder."""
    return out.parent / f".{out.name}.ncf-lock"


def _make_parents(folder: Path, out: Path) -> list[Path]:
    """Create ``folder`` (where ``out`` goes) and its missing parents; the ones created,
    deepest first."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NcfError(f"{out}: cannot write to {folder} ({exc.strerror or exc})") from None
    return made


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _acquire(out: Path, wait: bool, what: str) -> _Held:
    made = _make_parents(out.parent, out)
    lock = lock_path(out)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            _remove_made(made)
            raise NcfError(f"{out}: cannot write to {out.parent} "
                           f"({exc.strerror or exc})") from None
        try:
            if not _flock(fd, lock, out, wait, what):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            _remove_made(made)
            raise
        return _Held(fd, lock, made=made)


def _flock(fd: int, lock: Path, out: Path, wait: bool, what: str) -> bool:
    """Lock ``fd``; ``False`` when the file was replaced meanwhile (then try again)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            raise NcfError(f"{out}: another ncf process{_holder(lock)} is writing it; wait "
                           "for it to finish, or choose another output") from None
        notice(f"waiting for another ncf process{_holder(lock)} writing the {what} {out}")
        fcntl.flock(fd, fcntl.LOCK_EX)
    # the holder before us removes the file as it lets go: then lock the file now there
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _remove_made(made: list[Path]) -> None:
    for folder in made:  # deepest first; only while empty
        try:
            folder.rmdir()
        except OSError:
            break


def _release(out: Path) -> None:
    held = _HELD.get(out)
    if held is None:
        return
    held.count -= 1
    if held.count:
        return
    del _HELD[out]
    with contextlib.suppress(OSError):
        held.lock.unlink()  # while still locked: a waiter then sees a new file and retries
    os.close(held.fd)
    _remove_made(held.made)


def hold_output(out: str | Path, wait: bool = False, what: str = "output") -> Path:
    """Lock output ``out`` until :func:`release_all` (the end of the command).

    Args:
        out: the output folder (it need not exist; its missing parents are created, and
            removed again at release when still empty).
        wait: wait for another process holding it instead of refusing.
        what: what the output is, for the message (``prepared folder``, ``run directory``).

    Returns:
        ``out`` as an absolute path.

    Raises:
        NcfError: another ``ncf`` process holds it (unless ``wait``), or its folder cannot be
            written.
    """
    out = resolve_output(out)
    if out.parent.exists():  # one lock per folder, however it is reached
        out = Path(os.path.realpath(out.parent)) / out.name
    held = _HELD.get(out)
    if held is not None:  # this process holds it already (a command and its library calls)
        held.count += 1
        return out
    if fcntl is None:  # pragma: no cover
        _HELD[out] = _Held(-1, lock_path(out))
        return out
    _HELD[out] = _acquire(out, wait, what)
    return out


@contextlib.contextmanager
def output_lock(out: str | Path, wait: bool = False, what: str = "output") -> Iterator[Path]:
    """:func:`hold_output` for the duration of a ``with`` block (re-entrant in a process)."""
    path = hold_output(out, wait, what)
    try:
        yield path
    finally:
        _release(path)


def release_all() -> None:
    """Release every lock this process holds (the command line calls it as a command ends)."""
    for out in list(_HELD):
        _HELD[out].count = 1
        _release(out)


def temporary_folder(out: Path, kind: str = "tmp") -> Path:
    """A new hidden folder ``.NAME.KIND-XXXXXXXX`` beside ``out`` to write it in, with the
    permissions a plain ``mkdir`` gives (``mkdtemp`` makes it private, and so would the
    folder it becomes)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


# ------------------------------------------------------------------------ ownership
def _foreign(folder: Path, owned: Owned) -> str:
    """Why ``folder`` may not be replaced or removed, or ``""`` when it may."""
    try:
        if folder.is_symlink():
            return "it is a symbolic link"
        if not folder.is_dir():
            return "it is not a folder"
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if entries and not owned(folder):
        return "it holds files ncf did not write (" + ", ".join(entries[:3]) + (
            ", ..." if len(entries) > 3 else "") + ")"
    return ""


def replace_folder(tmp: Path, out: Path, owned: Owned, what: str = "folder") -> None:
    """Rename the complete folder ``tmp`` to ``out``, replacing a previous ``out`` of ours.

    ``out``, when it exists, must be empty or satisfy ``owned``: checked right before it is
    moved aside, and again on what was moved (something written into it meanwhile puts it
    back and refuses). The previous folder is restored if the final rename fails, and
    removed afterwards only if it still is ours.

    Raises:
        NcfError: ``out`` is not ours (nothing is changed then).
        OSError: a rename failed (``out`` is as it was).
    """
    checkpoint("replace", out)
    old = None
    if os.path.lexists(out):
        why = _foreign(out, owned)
        if why:
            raise NcfError(f"{out}: not replacing it with the new {what}: {why}; nothing "
                           "was written")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old)  # ``old`` is an empty folder: replace is allowed
        why = _foreign(old, owned)
        if why:
            os.rename(old, out)
            raise NcfError(f"{out}: not replacing it with the new {what}: {why}; nothing "
                           "was written")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    _fsync_dir(out.parent)
    if old is not None:
        try:
            remove_folder(old, owned)
        except KeyboardInterrupt:  # the new folder is in place: finish, and report success
            remove_folder(old, owned)
        except NcfError as exc:
            notice(str(exc))


def remove_folder(folder: Path, owned: Owned) -> None:
    """Delete ``folder`` if it (still) holds only what ``owned`` accepts; refuse otherwise.

    Raises:
        NcfError: the folder holds something else (it is left as it is).
    """
    checkpoint("remove", folder)
    if not os.path.lexists(folder):
        return
    why = _foreign(folder, owned)
    if why:
        raise NcfError(f"{folder}: left in place: {why}")
    shutil.rmtree(folder, ignore_errors=True)


def files_only(allowed: Callable[[str], bool]) -> Owned:
    """An ownership test: a folder of plain files whose every name ``allowed`` accepts."""

    def owned(folder: Path) -> bool:
        try:
            return all(p.is_file() and not p.is_symlink() and allowed(p.name)
                       for p in folder.iterdir())
        except OSError:
            return False

    return owned


def reclaim(folder: Path, prefix: str, owned: Owned) -> list[Path]:
    """Remove the temporary folders ``folder/PREFIX*`` an earlier killed run left behind.

    Call it only while holding the output's lock (no other ``ncf`` process can be using
    them then). A leftover holding anything ``owned`` rejects is left and named.

    Returns:
        The folders removed.
    """
    removed: list[Path] = []
    try:
        found = sorted(p for p in folder.iterdir() if p.name.startswith(prefix))
    except OSError:
        return removed
    size = 0
    for p in found:
        if p.is_symlink() or not p.is_dir():
            continue
        if _foreign(p, owned):
            notice(f"{p}: a temporary folder left by an interrupted run holds files ncf did "
                   "not write; left in place")
            continue
        size += sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    if removed:
        notice(f"removed {len(removed)} temporary folder(s) left by an interrupted run in "
               f"{folder} ({size / 1e6:,.1f} MB)")
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
