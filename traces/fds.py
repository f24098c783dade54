"""Silencing a file descriptor for a block, for native code that writes to it directly.

Its own module (not :mod:`traces.cli_support`) so that library code such as the ILP can
use it without importing the CLI stack.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["silenced_fd"]


@contextlib.contextmanager
def silenced_fd(fd: int) -> Iterator[None]:
    """Send file descriptor ``fd`` (1 or 2) to /dev/null for the block: native code that
    writes there directly (HiGHS' banner on stdout, the profiler's chatter on stderr) would
    otherwise corrupt ``--json`` output or the progress display. Python's own stream is
    flushed on the way in and out so nothing of ours is lost or swallowed."""
    stream = sys.stdout if fd == 1 else sys.stderr
    with contextlib.suppress(Exception):
        stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor at all: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        with contextlib.suppress(Exception):
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
