"""The functional face of the compiled kernels.

Each op checks its arguments (types, ranks, shapes, dtypes: _checks.py), makes them
C-contiguous, allocates the output and calls the kernels (one, or a few in turn for the
fused ops and Winograd), with per-thread scratch from _scratch.py. The kernels run
without bounds checks, so nothing reaches them unchecked. Layout is channels-last, as
in Keras: images (N, H, W, C), conv weights w (KH, KW, C, F) of F filters. Supported
dtypes are float32 and float64; all float arguments of a call share one dtype.

Index: op (backward) -- module: kernels, routing -- oracle twin -- tests (tests/ops/)

conv2d (conv2d_backward) -- conv.py: strides or dilation_rate above 1: _im2col then
    _gemm.gemm (backward: gemm then _im2col.col2im); else _conv_1ch if C == 1; else
    _winograd for 5x5 weights with C >= 8 and F >= 16 (winograd.takes_winograd; the
    weight gradient also needs C >= 16), else _gemm -- oracle.conv2d
    (oracle.conv2d_backward) -- test_conv.py, test_winograd.py, test_strided.py
dense (dense_backward) -- dense.py: _gemm.gemm if units >= DENSE_GEMM_MIN_UNITS, else
    _dense_narrow -- oracle.dense (oracle.dense_backward) -- test_dense.py
activation (activation_backward), by the name of any activation in
    cconv/activations.py's table; tanh, relu (tanh_backward, relu_backward) --
    elementwise.py: _elementwise on _activations.pxd.tp (the math, on the SIMD layer;
    codes and dispatch rendered from the table) -- oracle.activation
    (oracle.activation_backward), the table's formulas -- test_activations.py,
    test_elementwise.py
relu_general, elu (relu_general_backward, elu_backward): the ReLU, LeakyReLU and ELU layers'
    options -- elementwise.py: _elementwise (elu: the table's elu kernel, scaled by alpha)
    -- oracle.relu_general, oracle.elu (their _backward twins) -- test_activation_options.py
softmax (softmax_backward), log_softmax -- elementwise.py, NumPy along the last axis (or
    the given axes) --
    oracle.softmax (oracle.softmax_backward), oracle.log_softmax -- test_activations.py
dropout, dropout_mask (dropout_backward) -- elementwise.py: _elementwise (counter-based
    hash mask) -- oracle.dropout, oracle.dropout_mask (oracle.dropout_backward) --
    test_elementwise.py
max_pool2d (max_pool2d_backward) -- pool.py: _pool (max_pool_* when strides equal
    pool_size, max_pool_window_* otherwise) -- oracle.max_pool2d
    (oracle.max_pool2d_backward) -- test_pool.py, test_strided.py
avg_pool2d (avg_pool2d_backward) -- pool.py: _pool.avg_pool_* -- oracle.avg_pool2d
    (oracle.avg_pool2d_backward) -- test_strided.py
kernel_pool (kernel_pool_backward) -- pool.py: _pool -- oracle.kernel_pool
    (oracle.kernel_pool_backward) -- test_pool.py
conv2d_dense (forward only; fusion rule ConvDense) -- fused.py: _conv_1ch if C == 1,
    else conv2d then dense -- oracle.conv2d_dense -- test_fused.py
dense_backward_gated (fusion rule ConvDropoutDense) -- fused.py: _dense_narrow if
    units < DENSE_GEMM_MIN_UNITS, else _gemm then the gates -- oracle.dense_backward_gated
    -- test_fused.py
conv2d_maxpool (backward: max_pool2d_backward, then conv2d_backward; fusion rule
    ConvPool) -- fused.py: _conv_1ch if C == 1, _winograd then _pool where conv2d takes
    Winograd, else _gemm -- oracle.conv2d_maxpool -- test_fused.py
adam_update, sgd_update, rmsprop_update -- optim.py: _optim, one fused pass each --
    oracle.adam_update, oracle.sgd_update, oracle.rmsprop_update -- test_optim.py
rescale (rescale_backward) -- spatial.py: vectorised NumPy, no kernel (memory-bound: one
    multiply-add per element) -- oracle.rescale (oracle.rescale_backward) -- test_spatial.py
zero_pad2d (zero_pad2d_backward) -- spatial.py: vectorised NumPy slice copies, no kernel --
    oracle.zero_pad2d (oracle.zero_pad2d_backward) -- test_spatial.py
global_avg_pool2d, global_max_pool2d (global_avg_pool2d_backward,
    global_max_pool2d_backward) -- spatial.py: vectorised NumPy reductions over H and W, no
    kernel -- oracle.global_avg_pool2d, oracle.global_max_pool2d (their _backward twins) --
    test_spatial.py
batch_norm (batch_norm_backward), batch_norm_inference (batch_norm_backward with
    batch_statistics=False) -- norm.py: _norm (per-channel sums in float64, two passes,
    fixed row chunks reduced in order; the elementwise passes in float64, rounded once) --
    oracle.batch_norm, oracle.batch_norm_inference (oracle.batch_norm_backward) --
    test_norm.py
add, subtract, multiply, average, maximum (add_backward, subtract_backward,
    multiply_backward, average_backward, maximum_backward): the merge layers, a list of
    inputs of one shape folded left to right -- merge.py: _merge (the forward passes,
    multiply's and maximum's gradients; the other gradients are NumPy copies, a negation,
    a division) -- their oracle twins -- test_merge.py
concatenate (concatenate_backward) -- merge.py: NumPy (memory moved, no arithmetic) --
    oracle.concatenate (oracle.concatenate_backward) -- test_merge.py
legacy_coin_flips -- random.py: _random (np.random's MT19937 stream) --
    oracle.legacy_coin_flips -- test_random.py
conv_output_shape, pool_output_shape, check_size, pad_widths -- shape and memory helpers.
"""
from cconv.ops import _scratch
from cconv.ops._checks import (FLOAT_DTYPES, KERNEL_ACTIVATIONS, PADDINGS, check_size,
                               gradient_from)
from cconv.ops.conv import conv2d, conv2d_backward, conv_output_shape
from cconv.ops.dense import DENSE_GEMM_MIN_UNITS, dense, dense_backward
from cconv.ops.elementwise import (activation, activation_backward, dropout,
                                   dropout_backward, dropout_mask, elu, elu_backward,
                                   log_softmax, relu, relu_backward, relu_general,
                                   relu_general_backward, softmax, softmax_backward, tanh,
                                   tanh_backward)
from cconv.ops.fused import conv2d_dense, conv2d_maxpool, dense_backward_gated
from cconv.ops.merge import (add, add_backward, average, average_backward, concatenate,
                             concatenate_backward, maximum, maximum_backward, multiply,
                             multiply_backward, subtract, subtract_backward)
from cconv.ops.norm import batch_norm, batch_norm_backward, batch_norm_inference
from cconv.ops.optim import adam_update, rmsprop_update, sgd_update
from cconv.ops.pool import (KERNEL_POOL_MODES, avg_pool2d, avg_pool2d_backward,
                            kernel_pool, kernel_pool_backward, max_pool2d,
                            max_pool2d_backward, pool_output_shape)
from cconv.ops.random import legacy_coin_flips
from cconv.ops.spatial import (global_avg_pool2d, global_avg_pool2d_backward,
                               global_max_pool2d, global_max_pool2d_backward, pad_widths,
                               rescale, rescale_backward, zero_pad2d, zero_pad2d_backward)

__all__ = [
    "FLOAT_DTYPES", "KERNEL_ACTIVATIONS", "gradient_from", "PADDINGS", "DENSE_GEMM_MIN_UNITS",
    "KERNEL_POOL_MODES", "check_size", "conv_output_shape", "pool_output_shape",
    "conv2d", "conv2d_backward", "dense", "dense_backward",
    "tanh", "tanh_backward", "relu", "relu_backward", "activation", "activation_backward",
    "softmax", "softmax_backward", "log_softmax", "relu_general", "relu_general_backward",
    "elu", "elu_backward",
    "dropout", "dropout_backward", "dropout_mask",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "kernel_pool",
    "kernel_pool_backward", "conv2d_dense", "dense_backward_gated", "conv2d_maxpool",
    "adam_update", "sgd_update", "rmsprop_update",
    "legacy_coin_flips", "pad_widths", "rescale", "rescale_backward", "zero_pad2d",
    "zero_pad2d_backward", "global_avg_pool2d", "global_avg_pool2d_backward",
    "global_max_pool2d", "global_max_pool2d_backward", "batch_norm", "batch_norm_backward",
    "batch_norm_inference", "add", "add_backward", "subtract", "subtract_backward",
    "multiply", "multiply_backward", "average", "average_backward", "maximum",
    "maximum_backward", "concatenate", "concatenate_backward",
]
