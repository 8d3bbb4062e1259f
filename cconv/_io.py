"""Atomic file writes: a temporary file beside the target, renamed into place."""
import contextlib
import os
import secrets
import socket
import stat


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
        # the random part (hex) never holds "-", so the last two "-" end host and pid
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
    fd, tmp = _create_temporary(folder, f"{prefix}{socket.gethostname()}-{os.getpid()}-",
                                suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        try:  # an existing file keeps its mode (a 0600 checkpoint stays private)
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temporary(folder, prefix, suffix):
    """A new file prefix + random + suffix in folder, opened for writing. Mode 0o666 goes
    through the process umask, as open() would apply it: the umask is never changed, which
    would race with other threads creating files. The random part holds no "-"."""
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
