"""A perceptron on generated data, standard library only (runs on a bare Python image)."""

import argparse
import json
import os
import random

from airflow_provider.core import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = []
    for _ in range(500):
        x = [rng.gauss(0, 1) for _ in range(3)]
        data.append((x, 1 if 2 * x[0] - x[1] + 0.5 * x[2] > 0 else -1))
    weights = [0.0, 0.0, 0.0]
    run = Run.get_context()
    for epoch in range(args.epochs):
        mistakes = 0
        for x, y in data:
            if y * sum(w * v for w, v in zip(weights, x, strict=True)) <= 0:
                weights = [w + y * v for w, v in zip(weights, x, strict=True)]
                mistakes += 1
        accuracy = 1 - mistakes / len(data)
        run.log("accuracy", accuracy)
        print(f"epoch {epoch}: accuracy={accuracy:.3f}")
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/weights.json", "w") as handle:
        json.dump(weights, handle)


if __name__ == "__main__":
    main()
