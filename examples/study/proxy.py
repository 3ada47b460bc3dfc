"""Selection via Proxy on the three study data sets: score with a small proxy, train the target model.

For each study data set, two runs of the same methods at 50% pruning: scored by the target model
itself, and scored by a proxy (``--score_model``: a SmallCNN of width 4 for the width-16 CNN, an MLP of
hidden width 16 for the width-128 MLP). Prints test accuracy (mean ± std over the config's seeds),
total cost (scoring + coreset training, x one full-data training; a proxy's scoring run is charged by
its forward FLOPs), the Spearman rank correlation of the two runs' scores (one scoring run each), random
pruning at the same ratio and seeds, and each coreset's points above the equal-cost frontier at its cost
(the report's ``frontier``: the full data trained for as many samples, the ``full-budget`` baselines).

    OMP_NUM_THREADS=1 python examples/study/proxy.py --output_dir runs/proxy
    python examples/study/proxy.py --output_dir runs/proxy --tabulate   # the table of runs made before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import lightning_prune as lp

RATIO = "0.50"
METHODS = "[{name: tdds, args: {trajectory: 20, window: 10, decay: 0.9}, strategy: auto}, {name: aum, strategy: auto}]"
CNN_PROXY = (
    "{class_path: lightning_prune.models.Classifier, init_args: {backbone: {class_path: "
    "lightning_prune.models.SmallCNN, init_args: {num_classes: 10, width: 4}}, lr: 0.05}}"
)
MLP_PROXY = (
    "{class_path: lightning_prune.models.Classifier, init_args: {backbone: {class_path: "
    "lightning_prune.models.MLP, init_args: {in_features: 32, num_classes: 8, hidden: 16}}, lr: 0.05}}"
)
DATA_SETS = {"digits": CNN_PROXY, "noisy_digits": CNN_PROXY, "tabular": MLP_PROXY}
STUDY = Path(__file__).resolve().parent


def run(data_set: str, out: Path, proxy: str | None) -> None:
    command = [
        "lightning-prune", "run", "--config", str(STUDY / f"{data_set}.yaml"), "--methods", METHODS,
        "--prune_ratios", f"[{RATIO}]", "--output_dir", str(out),
    ]  # fmt: skip
    if proxy is not None:
        command += ["--score_model", proxy]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/proxy")
    parser.add_argument("--data_sets", nargs="*", default=list(DATA_SETS), choices=list(DATA_SETS))
    parser.add_argument("--tabulate", action="store_true", help="read the runs under --output_dir; run nothing")
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", file=sys.stderr)
    rows = []
    for data_set in args.data_sets:
        own, proxied = (Path(args.output_dir) / f"{data_set}-{key}" for key in ("self", "proxy"))
        if not args.tabulate:
            run(data_set, own, None)
            run(data_set, proxied, DATA_SETS[data_set])
        reports = {
            key: json.loads((path / "report.json").read_text()) for key, path in (("self", own), ("proxy", proxied))
        }
        for method in ("tdds", "aum"):
            cells = [data_set, method]
            for key in ("self", "proxy"):
                entry = reports[key]["test_accuracy"][method][RATIO]
                cost = reports[key]["total_cost"][method][RATIO]["relative"]
                cells.append(f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f} ({cost:.2f}x)")
            loss = 100 * (
                reports["self"]["test_accuracy"][method][RATIO]["mean"]
                - reports["proxy"]["test_accuracy"][method][RATIO]["mean"]
            )
            rho = spearman(*(lp.Scores.load(path / "scores" / f"{method}.npz").values for path in (own, proxied)))
            random = reports["self"]["test_accuracy"]["random"][RATIO]
            frontier = [reports[key]["frontier"][method][RATIO]["difference"] for key in ("self", "proxy")]
            cells += [f"{loss:+.2f}", f"{rho:.2f}", f"{100 * random['mean']:.2f}"]
            cells += [" / ".join(f"{gap:+.2f}" for gap in frontier)]
            rows.append(cells)
    print(
        "| data set | method | self-scored (cost) | proxy-scored (cost) | points lost to the proxy | Spearman | random "
        "| vs frontier, self / proxy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
