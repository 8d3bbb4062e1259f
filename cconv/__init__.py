"""cconv: a small, fast, exact CNN trainer. Cython/OpenMP kernels, a Keras-like API."""
from cconv import (callbacks, initializers, layers, losses, metrics, models, ops, optimizers,
                   utils)
from cconv._version import __version__
from cconv._config import cpu_capability, get_num_threads, set_num_threads, show_config
from cconv.layers import Input
from cconv.model import Model, ModelBusyError, NotCompiledError, Sequential

__all__ = ["Model", "Sequential", "Input", "NotCompiledError", "ModelBusyError", "layers", "losses",
           "initializers", "metrics", "models", "ops", "optimizers", "callbacks", "utils", "datasets", "show_config",
           "cpu_capability", "set_num_threads", "get_num_threads", "__version__"]


def __getattr__(name):
    # datasets pulls in gzip/urllib machinery that training code rarely needs
    if name == "datasets":
        import importlib
        return importlib.import_module("cconv.datasets")
    raise AttributeError(f"module 'cconv' has no attribute {name!r}")
