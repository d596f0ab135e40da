"""Logistic regression in numpy on generated data: a real model, trained in a few seconds.

Logs loss and accuracy per epoch through ``Run.get_context()`` and writes the model to
``outputs/model.npz``. Arguments: ``--epochs``, ``--learning-rate``, ``--samples``, ``--seed``, and
``--epoch-seconds`` (a pause per epoch, standing in for a real model's training time).
"""

import argparse
import json
import os
import time

import numpy as np

from airflow_provider.core import Run


def make_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(samples, 5))
    true_weights = np.array([1.5, -2.0, 0.7, 0.0, 3.0])
    labels = (features @ true_weights + rng.normal(scale=0.5, size=samples) > 0).astype(float)
    return features, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch-seconds", type=float, default=0.0)
    args = parser.parse_args()

    run = Run.get_context()
    features, labels = make_data(args.samples, args.seed)
    split = int(0.8 * len(labels))
    train_x, test_x, train_y, test_y = features[:split], features[split:], labels[:split], labels[split:]
    weights, bias = np.zeros(features.shape[1]), 0.0
    for epoch in range(args.epochs):
        probabilities = 1 / (1 + np.exp(-(train_x @ weights + bias)))
        loss = -np.mean(train_y * np.log(probabilities + 1e-12) + (1 - train_y) * np.log(1 - probabilities + 1e-12))
        gradient = probabilities - train_y
        weights -= args.learning_rate * train_x.T @ gradient / len(train_y)
        bias -= args.learning_rate * gradient.mean()
        accuracy = float(((1 / (1 + np.exp(-(test_x @ weights + bias))) > 0.5) == test_y).mean())
        run.log("loss", float(loss))
        run.log("accuracy", accuracy)
        print(f"epoch {epoch}: loss={loss:.4f} accuracy={accuracy:.3f}")
        time.sleep(args.epoch_seconds)
    os.makedirs("outputs", exist_ok=True)
    np.savez("outputs/model.npz", weights=weights, bias=bias)
    with open("outputs/metrics.json", "w") as handle:
        json.dump({"accuracy": accuracy, "loss": float(loss)}, handle)
    run.tag("model_type", "logistic_regression")


if __name__ == "__main__":
    main()
