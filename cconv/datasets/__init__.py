"""Datasets returned the way keras.datasets returns them."""
from . import mnist

__all__ = ["mnist"]
