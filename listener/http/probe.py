"""`python -m listener.http.probe URL [--wait S]`: ask one of the port's probes, for a supervisor.

Exits 0 once URL answers 200, 1 when it does not within --wait seconds (default 0:
one try), with one line on stderr saying what it answered. The image and the systemd
units need no curl: the listener's own Python asks.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

# Each try's own timeout, below Docker's HEALTHCHECK --timeout of 5 s.
TRY_TIMEOUT_S = 4.0


def probe(url: str) -> str | None:
    """None when url answers 200; else what it answered, in a few words."""
    if not url.startswith(("http://", "https://")):
        return "not an http:// or https:// URL"
    try:
        with urllib.request.urlopen(url, timeout=TRY_TIMEOUT_S) as reply:  # noqa: S310 (scheme checked above)
            return None if reply.status == 200 else f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(200).decode("utf-8", "replace").strip()
        return f"HTTP {exc.code}" + (f": {body}" if body else "")
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Probe until it answers 200 or the wait is over; the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m listener.http.probe", description=__doc__.split("\n")[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:9187/livez")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="keep trying this long")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        problem = probe(args.url)
        if problem is None:
            return 0
        if time.monotonic() >= deadline:
            print(f"{args.url}: {problem}", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
