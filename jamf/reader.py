"""``python -m jamf.reader``: the child process that reads a large listing for a sync.

It takes a pickled ``jamf.reading.ReadRequest`` on stdin and answers on stdout; see
``jamf.reading.ProcessReader``. Nothing else may write to stdout, so print goes to stderr.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from jamf.reading import PARENT_ENV, ReadRequest, serve


def die_with_parent() -> bool:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``): a
    sync's process killed outright (SIGKILL of a Celery pool process, the OOM killer)
    must not leave its reader reading Jamf on. False when the parent named in the
    environment is gone already, or was never this process's."""
    parent = os.environ.get(PARENT_ENV)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Set after the fork: a parent that died in between left this one to another.
    return parent is None or os.getppid() == int(parent)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main() -> int:
    if not die_with_parent():
        print("jamf.reader: the sync that started this reader is gone", file=sys.stderr)
        return 2
    request = pickle.load(sys.stdin.buffer)  # noqa: S301 - from the parent sync
    if not isinstance(request, ReadRequest):
        print("jamf.reader: expected a ReadRequest on stdin", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    try:
        serve(request, out)
    except BrokenPipeError:  # the parent stopped reading: it has what it wants
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
