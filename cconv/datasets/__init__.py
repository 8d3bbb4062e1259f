"""Datasets returned the way keras.datasets returns them."""
from . import cifar10, fashion_mnist, mnist

__all__ = ["cifar10", "fashion_mnist", "mnist"]
