"""Compiled kernels. Private: call them through cconv.ops, which validates every argument."""
