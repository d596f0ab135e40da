"""Triggers of the training-runs provider."""
