"""Fixtures of the integration tests that several modules share."""

from tests.integration.slurm_support import slurm

__all__ = ["slurm"]
