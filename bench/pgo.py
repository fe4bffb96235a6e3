#!/usr/bin/env python3
"""A profile-guided release build of `switchyard` (bench/switchyard_bench/pgo.py says how and
why): `make release`, the image's build and `make bench` use it.

    python3 bench/pgo.py                         # prints target/pgo/release/switchyard
    python3 bench/pgo.py --target x86_64-unknown-linux-musl --install /out/switchyard
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from switchyard_bench.pgo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
