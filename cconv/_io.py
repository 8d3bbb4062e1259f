"""Atomic file writes: a temporary file beside the target, renamed into place."""
import contextlib
import os
import socket
import tempfile


def _default_mode():
    # mkstemp creates 0600 files; give the final file the mode open() would have.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_stale_temporaries(folder, prefix, suffix):
    """Delete temporary files that a write of ours left behind when its process was
    killed (kill -9, power loss): names prefix + host + pid + random + suffix, from this
    host, whose process no longer runs. A write in progress, in this process or another,
    keeps its file. Returns the names removed."""
    if os.name != "posix":  # os.kill(pid, 0) does not probe a process on Windows
        return []
    host, removed = socket.gethostname(), []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        # mkstemp's random part never holds "-", so the last two "-" end host and pid
        parts = name[len(prefix):len(name) - len(suffix)].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _alive(int(parts[1])):
            continue
        with contextlib.suppress(FileNotFoundError):  # another sweeper got there first
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_write(path, prefix=".cconv-", suffix=".tmp"):
    """Yield a binary file object; on success its bytes replace `path` in one rename.
    On any exception the temporary file is removed and `path` is left as it was. The
    temporary name records host and pid, so the next write to the folder can remove
    what a killed process left (remove_stale_temporaries)."""
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder, prefix, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{socket.gethostname()}-{os.getpid()}-",
                               suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
