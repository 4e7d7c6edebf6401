"""``python -m jamf.reader``: the child process that reads a large listing for a sync.

It takes a pickled ``jamf.reading.ReadRequest`` on stdin and answers on stdout; see
``jamf.reading.ProcessReader``. Nothing else may write to stdout, so print goes to stderr.
"""

from __future__ import annotations

import pickle
import sys

from jamf.reading import ReadRequest, serve


def main() -> int:
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
