"""Fit ``y = w * x + b`` to ``train.csv`` by gradient descent: the MLproject example's entry point.

Standard library only; logs ``loss`` each epoch and ``final_loss`` through ``Run.get_context()``
and writes ``outputs/model.json`` (the run's artifacts).
"""

import argparse
import csv
import json
import os

from airflow_provider.core import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder holding train.csv")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    args = parser.parse_args()

    with open(os.path.join(args.data, "train.csv"), newline="") as handle:
        rows = [(float(row["x"]), float(row["y"])) for row in csv.DictReader(handle)]
    run = Run.get_context()
    weight, bias, loss = 0.0, 0.0, float("nan")
    for epoch in range(args.epochs):
        for _ in range(10):
            errors = [(weight * x + bias - y, x) for x, y in rows]
            weight -= args.learning_rate * 2 * sum(e * x for e, x in errors) / len(rows)
            bias -= args.learning_rate * 2 * sum(e for e, _ in errors) / len(rows)
        loss = sum((weight * x + bias - y) ** 2 for x, y in rows) / len(rows)
        run.log("loss", loss)
        print(f"epoch {epoch}: loss={loss:.5f}")
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.json", "w") as handle:
        json.dump({"weight": weight, "bias": bias, "loss": loss}, handle)
    run.log("final_loss", loss)


if __name__ == "__main__":
    main()
