"""Fit ``y = w * x + b`` to ``train.csv`` by mini-batch gradient descent: the example job files' script.

Standard library only, so it runs with any interpreter in well under a second. Logs ``loss`` (mean
squared error) each epoch through ``Run.get_context()`` (a sweep minimizes it), writes the model to
``--model-dir`` (a job output) and a summary to ``./outputs`` (the run's artifacts).
"""

import argparse
import csv
import json
import os
import random

from airflow_provider.core import Run


def read_rows(folder: str) -> list[tuple[float, float]]:
    with open(os.path.join(folder, "train.csv"), newline="") as handle:
        return [(float(row["x"]), float(row["y"])) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="folder holding train.csv")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-dir", default="outputs/model")
    args = parser.parse_args()

    run = Run.get_context()
    rows = read_rows(args.data)
    rng = random.Random(0)
    weight, bias, loss = 0.0, 0.0, float("nan")
    for epoch in range(args.epochs):
        rng.shuffle(rows)
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start:start + args.batch_size]
            errors = [(weight * x + bias - y, x) for x, y in batch]
            weight -= args.learning_rate * 2 * sum(e * x for e, x in errors) / len(batch)
            bias -= args.learning_rate * 2 * sum(e for e, _ in errors) / len(batch)
        loss = sum((weight * x + bias - y) ** 2 for x, y in rows) / len(rows)
        run.log("loss", loss)
        print(f"epoch {epoch}: loss={loss:.5f} w={weight:.3f} b={bias:.3f}")

    os.makedirs(args.model_dir, exist_ok=True)
    with open(os.path.join(args.model_dir, "model.json"), "w") as handle:
        json.dump({"weight": weight, "bias": bias}, handle)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/summary.json", "w") as handle:
        json.dump({"loss": loss, "epochs": args.epochs, "learning_rate": args.learning_rate}, handle)
    run.log("final_loss", loss)
    run.tag("model_type", "linear")


if __name__ == "__main__":
    main()
