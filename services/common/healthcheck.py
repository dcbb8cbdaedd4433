"""Container healthcheck: `python -m services.common.healthcheck URL` exits 0 on HTTP < 400.

Our images carry Python but no curl, and a healthcheck that imports nothing but the
standard library costs a few milliseconds every interval instead of an httpx import.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status < 400)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.common.healthcheck URL", file=sys.stderr)
        return 2
    return 0 if check(argv[0]) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
