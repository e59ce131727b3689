"""Safe, atomic writes: the one place where adcore creates, replaces or deletes anything on disk.

Why: an output path is the user's choice, and ``--out .`` or ``--out images/``
must never cost them a file. So every folder adcore writes says so with a
marker (``.adcore.json``, or a model's own ``config.json``), and only a folder
that carries the marker of the same kind is ever replaced or deleted; anything
else at a target stops the command before any work, on one line.

A folder result is built in a hidden staging sibling (``.adcore-staging-...``,
whose marker records pid and host) and published in one step: on Linux with
``renameat2(RENAME_EXCHANGE)``, so the target holds the old complete result or
the new complete one at every instant; elsewhere by rename-aside. A later
write removes the staging folders of dead processes, and only those.
Folders and files get the user's umask (no ``mkdtemp``, which makes 0700).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import secrets
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

from adcore.errors import OutputError

__all__ = ["MARKER", "STAGING_PREFIX", "Kind", "check_apart", "check_not_cwd", "check_not_inside_whole",
           "check_output", "check_target", "check_writable", "clean_stale", "mark", "prepare_folder", "remove_folder",
           "replace_folder", "write_file", "write_json"]

MARKER = ".adcore.json"
STAGING_PREFIX = ".adcore-staging-"
_TMP_PREFIX = ".adcore-tmp-"
_FORMAT_VERSION = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_ATTEMPTS = 20


@attrs.frozen
class Kind:
    """A sort of folder adcore writes, and how to tell one on disk.

    Attributes:
        label: what it is, for messages ("a predictions folder").
        format: the ``"format"`` its identity file names.
        identity: the JSON file holding that format: the marker, or a file of the
            folder's own (a model's ``config.json``), and then no marker is kept.
        recognise: overrides the identity check, for folders whose identity file
            may itself be the damaged part (training checkpoints).
    """

    label: str
    format: str
    identity: str = MARKER
    recognise: Callable[[Path], bool] | None = None

    def owns(self, folder: Path) -> bool:
        """Whether ``folder`` is one of these, written by adcore."""
        if self.recognise is not None:
            return self.recognise(folder)
        return _read_format(folder / self.identity) == self.format


# --------------------------------------------------------------------------- checks before any work
def check_output(target: Path, kind: Kind, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse, before any work, a ``target`` that is or overlaps an input, cannot be written, or is not adcore's."""
    check_apart(target, inputs)
    check_not_cwd(target)
    check_writable(target)
    check_not_inside_whole(target)
    check_target(target, kind)


def check_apart(out: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse an ``out`` that is, contains or lies inside one of ``inputs`` (real paths, symlinks resolved)."""
    where = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        source = Path(item).resolve()
        if where == source:
            relation = "is"
        elif where in source.parents:
            relation = "contains"
        elif source in where.parents:
            relation = "lies inside"
        else:
            continue
        raise OutputError(f"--out {out} {relation} the input {item}; nothing was written. "
                          "Choose an --out outside the inputs")


def check_not_cwd(target: Path) -> None:
    """Refuse a ``target`` that is or contains the current directory (the shell would be left in a ghost)."""
    where, here = Path(target).resolve(), Path.cwd().resolve()
    if where == here or where in here.parents:
        raise OutputError(f"--out {target} is or contains the current directory, which adcore never replaces; "
                          "choose another --out")


def check_writable(target: Path) -> None:
    """Refuse a ``target`` whose nearest existing parent is a file or a folder this user cannot write in."""
    for parent in Path(os.path.abspath(target)).parents:
        if not os.path.lexists(parent):
            continue
        if not parent.is_dir():
            raise OutputError(f"--out {target}: {parent} is a file, not a folder; choose another --out")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"--out {target}: cannot write in {parent} (permission denied); "
                              "choose another --out")
        return


def check_not_inside_whole(target: Path) -> None:
    """Refuse a ``target`` inside a folder that adcore replaces as a whole (it would vanish with it)."""
    for parent in Path(target).resolve().parents:
        marker = _read_marker(parent / MARKER)
        if marker.get("whole"):
            raise OutputError(f"--out {target} lies inside {parent}, which {marker.get('written_by', 'adcore')} "
                              "replaces as a whole; choose another --out")


def check_target(target: Path, kind: Kind) -> None:
    """Refuse anything at ``target`` but nothing, an empty folder, or ``kind`` written by adcore."""
    target = Path(target)
    try:
        mode = os.lstat(target).st_mode  # one look, so another writer's move cannot split the answer
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise OutputError(f"{target}: is a symbolic link, not a folder written by adcore; "
                          "choose another --out or remove it yourself")
    if not stat.S_ISDIR(mode):
        raise OutputError(f"{target}: is a file and was not written by adcore; "
                          "choose another --out or remove it yourself")
    if _is_empty(target) or kind.owns(target) or not os.path.lexists(target):  # gone: another writer moved it
        return
    writer = _read_marker(target / MARKER).get("written_by")
    if writer:
        raise OutputError(f"{target}: was written by {writer} and is not {kind.label}; "
                          "choose another --out or remove it yourself")
    raise OutputError(f"{target}: exists and was not written by adcore (it has no {MARKER}); "
                      "choose another --out or remove it yourself")


# --------------------------------------------------------------------------- folders
def replace_folder(target: Path, write: Callable[[Path], None], kind: Kind) -> Path:
    """Build a folder with ``write(staging)`` and publish it at ``target`` in one step.

    Whatever was at ``target`` is replaced only if it is empty or ``kind`` written
    by adcore (else :class:`OutputError`, and nothing changes). On any error or
    interrupt the staging folder is removed and ``target`` is as it was.
    """
    target = Path(os.path.abspath(target))
    check_target(target, kind)
    created = _make_dirs(target.parent)
    clean_stale(target.parent)
    staging = _new_staging(target, kind)
    try:
        write(staging)
        if kind.identity != MARKER:
            (staging / MARKER).unlink()  # the folder's own identity file says what it is
        _publish(staging, target, kind)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return target


def prepare_folder(folder: Path, kind: Kind) -> Path:
    """Make ``folder`` ready to be written into: create and mark it, mark an empty one, or accept ``kind``."""
    folder = Path(folder)
    check_target(folder, kind)
    _make_dirs(folder)
    if not kind.owns(folder):
        mark(folder, kind)
    return folder


def mark(folder: Path, kind: Kind, whole: bool = False) -> None:
    """Write the marker that lets adcore overwrite in ``folder`` later, or replace it when it is a ``whole``."""
    write_json(Path(folder) / MARKER, {"format": kind.format, "format_version": _FORMAT_VERSION,
                                       "written_by": _written_by(), "whole": whole, "pid": os.getpid(),
                                       "host": socket.gethostname()})


def remove_folder(folder: Path, kind: Kind) -> None:
    """Delete ``folder`` if it is ``kind`` written by adcore (or empty); leave anything else alone."""
    folder = Path(folder)
    if folder.is_dir() and not folder.is_symlink() and (_is_empty(folder) or kind.owns(folder)):
        shutil.rmtree(folder, ignore_errors=True)


def clean_stale(parent: Path) -> None:
    """Remove the staging folders in ``parent`` left by dead adcore processes on this host (only those)."""
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return
    host = socket.gethostname()
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        marker = _read_marker(entry / MARKER)
        if marker:
            pid = marker.get("pid")
            if marker.get("host") == host and isinstance(pid, int) and pid != os.getpid() and not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
            continue
        # A writer killed between creating its folder and marking it leaves the folder empty, or
        # holding only its own half-written marker (a temp file named by its pid); the folder's
        # name says which process on which host made it. rmdir never removes anything else.
        pid = _named_owner(entry.name)
        if pid is not None and pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                for partial in entry.glob(f"{_TMP_PREFIX}{pid}-*"):
                    partial.unlink()
                entry.rmdir()


# --------------------------------------------------------------------------- single files
def write_file(path: Path, data: str | bytes) -> None:
    """Write one file atomically and durably: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name[:100]}")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as strict JSON, atomically: NaN or infinity is an error here, never an invalid file."""
    write_file(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- internals
def _publish(staging: Path, target: Path, kind: Kind) -> None:
    """Move ``staging`` to ``target``, swapping out an earlier result (retried when a writer races us)."""
    for _ in range(_ATTEMPTS):
        try:
            os.rename(staging, target)  # succeeds onto nothing or an empty folder only
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                check_target(target, kind)
                raise
        try:
            old = _swap_out(staging, target)
        except FileNotFoundError:
            continue  # another writer moved it meanwhile
        # Checked once it is in hand: a check before the swap would race the other writers.
        if not (_is_empty(old) or kind.owns(old)):
            _undo(old, target, staging)
            raise OutputError(f"{target}: changed while adcore was writing and was not written by adcore; "
                              "it was left as it was")
        if old != staging:
            try:
                os.rename(staging, target)
            except OSError:
                shutil.rmtree(old, ignore_errors=True)
                continue
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OutputError(f"{target}: other processes kept replacing it; nothing was written")


def _swap_out(staging: Path, target: Path) -> Path:
    """Take what is at ``target`` out of the way; returns where it now is.

    With an atomic exchange ``staging`` is at ``target`` already and the old
    folder is at ``staging``; else the old folder is moved aside, and the
    caller still has to move ``staging`` in.
    """
    if _exchange(staging, target):
        return staging
    aside = _new_name(target, "old")
    os.rename(target, aside)
    return aside


def _undo(old: Path, target: Path, staging: Path) -> None:
    """Put a foreign folder back at ``target`` after a swap or a move aside."""
    if old == staging:
        _exchange(staging, target)
    else:
        os.rename(old, target)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _new_staging(target: Path, kind: Kind) -> Path:
    staging = _new_name(target, "new")
    os.mkdir(staging)  # mode 0777 less the umask
    try:
        mark(staging, kind, whole=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _new_name(target: Path, role: str) -> Path:
    return target.with_name(f"{STAGING_PREFIX}{role}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}-"
                            f"{target.name[:100]}")


def _host_tag() -> str:
    """This host's name without dashes (the name's field separator), short enough for any file name."""
    return "".join(c for c in socket.gethostname() if c.isascii() and c.isalnum())[:32] or "host"


def _named_owner(name: str) -> int | None:
    """The process id in a staging folder's name when this host made it, else None."""
    fields = name[len(STAGING_PREFIX):].split("-", 4)
    if len(fields) == 5 and fields[0] in ("new", "old") and fields[1] == _host_tag() and fields[2].isdigit():
        return int(fields[2])
    return None


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents with the umask; returns those created, deepest first."""
    created: list[Path] = []
    for path in [folder, *folder.parents]:
        if os.path.lexists(path):
            break
        created.append(path)
    for path in reversed(created):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    return created


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only ever removes an empty folder


def _is_empty(folder: Path) -> bool:
    try:
        return next(os.scandir(folder), None) is None
    except OSError:
        return False


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_format(path: Path) -> Any:
    return _read_marker(path).get("format")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process id: never treat it as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _written_by() -> str:
    """``adcore <command>`` while a command runs, else ``adcore`` (the Python API)."""
    import click

    context = click.get_current_context(silent=True)
    return f"adcore {context.info_name}" if context is not None and context.parent is not None else "adcore"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
