"""Compatibility layers that let scripts written for other platforms run unchanged on ours."""
