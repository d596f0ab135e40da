"""A tiny DistributedDataParallel regression on the CPU (gloo): each process trains on its own
shard; DDP averages the gradients. Needs torch in the environment."""

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from airflow_provider.core import Run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    dist.init_process_group(os.environ.get("TRAINING_RUNS_COMMUNICATION_BACKEND", "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(rank)
    features = torch.randn(512, 4)
    targets = features @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.05 * torch.randn(512)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = Run.get_context()
    for _ in range(args.epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(features).squeeze(1), targets)
        loss.backward()
        optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        run.log("loss", total.item() / world)
    if rank == 0:
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/weights.json", "w") as out:
            json.dump(model.module.weight.detach().squeeze(0).tolist(), out)
        print(f"{world} processes: loss {total.item() / world:.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
