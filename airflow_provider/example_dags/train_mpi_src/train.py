"""Data-parallel least squares with mpi4py: each rank fits its shard, gradients are averaged with
allreduce, rank 0 saves the model. Needs numpy and mpi4py in the environment, mpirun on the target."""

import argparse
import json
import os

import numpy as np
from mpi4py import MPI

from airflow_provider.core import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(rank)
    true_weights = np.array([2.0, -1.0, 0.5])
    features = rng.normal(size=(1000, 3))
    targets = features @ true_weights + rng.normal(scale=0.1, size=1000)
    weights = np.zeros(3)
    run = Run.get_context()  # ranks other than 0 log as rank_<N>/<name>
    for _ in range(args.epochs):
        gradient = 2 * features.T @ (features @ weights - targets) / len(targets)
        weights -= args.lr * comm.allreduce(gradient) / size
        loss = comm.allreduce(float(np.mean((features @ weights - targets) ** 2))) / size
        run.log("shard_loss", float(np.mean((features @ weights - targets) ** 2)))
        if rank == 0:
            run.log("loss", loss)
    if rank == 0:
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/weights.json", "w") as out:
            json.dump(weights.tolist(), out)
        print(f"{size} ranks: loss {loss:.4f}, weights {np.round(weights, 3).tolist()}")


if __name__ == "__main__":
    main()
