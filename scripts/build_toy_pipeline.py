"""Build the ``toy`` Stable Diffusion pipeline (see :mod:`hps.diffusion.toy`).

    python -m scripts.build_toy_pipeline              # into the cache open_pipeline("toy") reads
    python -m scripts.build_toy_pipeline --out DIR    # into DIR (a diffusers folder)

The cache folder is ``$HPS_TOY_CACHE/toy-<recipe hash>`` (default root ``~/.cache/hps``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hps.diffusion.toy import ensure_toy_pipeline, toy_cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help=f"target folder (default {toy_cache_dir()})")
    parser.add_argument("--threads", type=int, help="torch threads (default: cores / 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    started = time.monotonic()
    folder = ensure_toy_pipeline(args.out, progress=not args.quiet, threads=args.threads)
    print(f"toy pipeline ready in {folder} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
