"""The kernel modules compiled for the 'default' CPU level (see cconv/_kernels/_levels.py)."""
