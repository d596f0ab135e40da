"""Logistic regression in numpy on every CSV partition of the input folder; the model goes to the output.

Arguments: ``--data`` (a folder of ``*.csv`` files with columns ``f1..f5,label``), ``--model-dir``
(where ``model.json`` is written), ``--epochs``. Logs ``rows``, ``loss`` and ``accuracy``.
"""

import argparse
import glob
import json
import os

import numpy as np

from airflow_provider.core import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    run = Run.get_context()
    partitions = sorted(glob.glob(os.path.join(args.data, "*.csv")))
    table = np.concatenate([np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2) for path in partitions])
    features, labels = table[:, :-1], table[:, -1]
    run.log("rows", len(labels))
    run.log("partitions", len(partitions))
    weights = np.zeros(features.shape[1])
    for _ in range(args.epochs):
        predicted = 1 / (1 + np.exp(-(features @ weights)))
        weights -= 0.5 * features.T @ (predicted - labels) / len(labels)
    predicted = 1 / (1 + np.exp(-(features @ weights)))
    loss = float(-np.mean(labels * np.log(predicted + 1e-9) + (1 - labels) * np.log(1 - predicted + 1e-9)))
    run.log("loss", loss)
    run.log("accuracy", float(np.mean((predicted > 0.5) == labels)))
    with open(os.path.join(args.model_dir, "model.json"), "w") as handle:
        json.dump({"weights": weights.tolist(), "trained_on": [os.path.basename(p) for p in partitions]}, handle)


if __name__ == "__main__":
    main()
