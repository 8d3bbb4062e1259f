"""The kernel modules compiled for the 'avx2' CPU level (see cconv/_kernels/_levels.py)."""
