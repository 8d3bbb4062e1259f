"""The kernel modules compiled for the 'avx512' CPU level (see cconv/_kernels/_levels.py)."""
