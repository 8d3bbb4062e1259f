"""Atomic file writes: a temporary file beside the target, renamed into place."""
import contextlib
import os
import tempfile


def _default_mode():
    # mkstemp creates 0600 files; give the final file the mode open() would have.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path, prefix=".cconv-", suffix=".tmp"):
    """Yield a binary file object; on success its bytes replace `path` in one rename.
    On any exception the temporary file is removed and `path` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
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
