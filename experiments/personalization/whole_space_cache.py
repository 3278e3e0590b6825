"""A proxy-value cache for `nb201_loop.py --cache` answered by the whole-space correlation run: every NB201
arch's raw default-scorer values, so a development study of the closed loop scores nothing.

Reads only the ``arch``, raw proxy and ``seconds`` columns of ``experiments/correlation/nb201-all/scores.csv``
(the same probe: 64 CIFAR-10 training images, probe and scoring seed 0, labeled), never its accuracy
columns. Its values agree with the search study's cache to within 3.1e-4 (relative; 1,983 of 2,488 shared
archs bit for bit), so a loop run on it can differ from one on that cache: compare variants on one cache.

    .venv/bin/python experiments/personalization/whole_space_cache.py --out /tmp/nb201-whole-space.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "search"))

from nb201_loop import cache_probe  # noqa: E402
from run import CACHE_VERSION  # noqa: E402

SCORES = HERE.parent / "correlation" / "nb201-all" / "scores.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scores", type=Path, default=SCORES)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    probe = cache_probe()
    names = probe["proxies"]
    lines = [json.dumps({"kind": "header", "version": CACHE_VERSION, "probe": probe})]
    with args.scores.open(newline="") as file:
        for row in csv.DictReader(file):
            values = {name: float(row[name]) for name in names}
            entry = {
                "arch": row["arch"],
                "values": values,
                "seconds": float(row["seconds"]),
                "source": "nb201-all",
            }
            lines.append(json.dumps(entry))
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{len(lines) - 1} archs -> {args.out}")


if __name__ == "__main__":
    main()
