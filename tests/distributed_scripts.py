"""Training scripts the distributed tests of several targets share, and the environment that runs
the tests' PyTorch venv (``/opt/torch-venv`` on the remote hosts and Slurm nodes)."""

from __future__ import annotations

from airflow_provider.core import Environment

MPI_RANKS_SCRIPT = """
    import socket
    from mpi4py import MPI
    from airflow_provider.core import Run
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    Run.get_context().log("rank_seen", rank)
    print(f"rank {rank} of {comm.Get_size()} on {socket.gethostname()}: sum {comm.allreduce(rank)}", flush=True)
"""
"""Every rank logs its rank and prints ``rank R of N on HOST: sum S`` (S: the allreduce of the ranks)."""

TORCH_ALLREDUCE_SCRIPT = """
    import os, socket
    import torch
    import torch.distributed as dist
    from airflow_provider.core import Run
    dist.init_process_group(os.environ["TRAINING_RUNS_COMMUNICATION_BACKEND"])
    value = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(value)
    Run.get_context().log("sum", value.item())
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} node {os.environ['NODE_RANK']} "
          f"on {socket.gethostname()}: sum {value.item()}", flush=True)
    dist.destroy_process_group()
"""
"""Every process prints ``rank R of N node K on HOST: sum S`` (S: the allreduce of rank + 1) and logs S."""


def remote_torch_environment(name: str) -> Environment:
    """The tests' PyTorch venv, mounted read-only at ``/opt/torch-venv`` on the remote hosts.

    :param name: the environment's name.
    """
    environment = Environment(name)
    environment.python.user_managed_dependencies = True
    environment.python.interpreter_path = "/opt/torch-venv/bin/python"
    return environment
