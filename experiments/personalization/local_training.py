"""Which local-training default makes SubNets work (issue 14, item 2): held-out accuracy on digits.

Four devices (the main job's: digits, Dirichlet 0.5, seed 0), each training four NB201 SubNets (three
random cells, seed 0, and one all-3x3 cell) with each budget given as ``EPOCHS,PATIENCE,AUGMENT``.
Prints one line per budget and writes ``local_training.md``. The accuracies are the devices' own held-out
splits, what a device reports; no benchmark table is read.

    python experiments/personalization/local_training.py 2,0,0 10,0,0 20,0,0 30,0,0 20,4,0 20,4,1
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from nasfleet.clients.training import train_subnet
from nasfleet.data.datasets import load_dataset
from nasfleet.data.partition import partition
from nasfleet.protocol.messages import SubNetAssignment, TrainConfig
from nasfleet.spaces import get_space

HERE = Path(__file__).resolve().parent
DENSE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def main(specs: list[str]) -> None:
    torch.set_num_threads(1)
    data = load_dataset("digits")
    parts = partition(data.labels, "dirichlet:0.5", 4, 0)
    space, rng = get_space("nb201"), np.random.default_rng(0)
    archs = [space.encode(space.sample(rng)) for _ in range(3)] + [DENSE]
    lines = [
        "| epochs | patience | augment | mean acc | min acc | epochs done (mean) | s per training |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        epochs, patience, augment = (int(v) for v in spec.split(","))
        accuracies, done, started = [], [], time.perf_counter()
        for device, index in enumerate(parts):
            local = data.subset(index)
            for arch in archs:
                config = TrainConfig(
                    epochs, 32, 0.05, 600.0, seed=device, patience=patience, augment=bool(augment)
                )
                assignment = SubNetAssignment(
                    "bench", "nb201", arch, local.num_classes, local.input_shape, config
                )
                report = train_subnet(assignment, local)
                accuracies.append(report.accuracy)
                done.append(report.epochs_done)
        seconds = (time.perf_counter() - started) / len(accuracies)
        line = (
            f"| {epochs} | {patience} | {bool(augment)} | {np.mean(accuracies):.3f} "
            f"| {np.min(accuracies):.3f} | {np.mean(done):.1f} | {seconds:.1f} |"
        )
        print(line, flush=True)
        lines.append(line)
    (HERE / "local_training.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["2,0,0", "10,0,0", "20,0,0", "30,0,0", "20,4,0", "20,4,1"])
