#!/usr/bin/env python3
"""Plant deliberate bugs in a copy of cconv, one at a time, and see which tests catch them.

Each mutant is a list of exact text substitutions (file, old text, new text); each old text
must occur exactly once in its file, or the run stops and says so (the source moved on:
update the mutant). For every mutant, the working tree (tracked and untracked files, minus
ignored ones) and the compiled kernels are copied into a temporary folder, the bug is
planted there, and the mutant's tests run against the copy. A mutant that touches the
kernels' sources (cconv/_kernels/) is rebuilt at one level, the one this CPU uses, and
run with CCONV_CPU_CAPABILITY forcing it. The checkout itself is never modified.

A mutant no test fails "survived": a missing test, unless the bug is truly harmless.
The goal is every mutant killed by at least two test functions (the cases of one
parametrized test count once). First, unless --no-baseline, the
union of the selected mutants' tests runs on an unmutated copy and must pass: a kill
only means something if the test passed before.

    python tools/mutants.py --list              the mutants and what each plants
    python tools/mutants.py --check             only check that every substitution applies
    python tools/mutants.py                     run them all (10 minutes here, 2-3 of them
                                                rebuilding a level for the kernel mutant)
    python tools/mutants.py --only shuffle_ignored --only glorot_limit_sqrt3
    python tools/mutants.py --jobs 2            two mutants at a time

Tests that need MNIST (marked [MNIST] below) read CCONV_DATA_DIR, as in the suite; without
it they skip, which counts as not killing. Exit status 1 if a mutant survived (or a run
broke), else 0. Run it before calling an issue about tests resolved.
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = "cconv/_kernels/"

Mutant = namedtuple("Mutant", "name description edits tests")
Mutant.__doc__ = """edits: [(path relative to the repo, old text, new text)], each old text
exactly once in its file; tests: pytest arguments (files or node ids) that should kill it."""

MUTANTS = [
    # ---- the kernels' layer (ops, fused steps, optimizers' kernels) ----
    Mutant("conv_grad_sign_1ch", "single-channel conv: weight gradient with its sign flipped",
           [("cconv/ops/conv.py", "    grad_w = partial_w.sum(axis=0)\n",
             "    grad_w = -partial_w.sum(axis=0)\n")],
           ["tests/ops/test_conv.py", "tests/test_network_sgd.py", "tests/test_model.py",
            "tests/test_fuzz.py", "tests/test_mnist_e2e.py"]),
    Mutant("conv_grad_sign_gemm", "multi-channel (GEMM) conv: weight gradient sign flipped",
           [("cconv/ops/conv.py",
             "        _gemm.conv_backward_weights(x, grad_out, grad_w, work, pad_top, pad_left, "
             "threads)\n",
             "        _gemm.conv_backward_weights(x, grad_out, grad_w, work, pad_top, pad_left, "
             "threads)\n        np.negative(grad_w, out=grad_w)\n")],
           ["tests/ops/test_conv.py", "tests/test_network_sgd.py", "tests/test_model.py"]),
    Mutant("conv_grad_sign_winograd", "Winograd 5x5 conv: weight gradient sign flipped",
           [("cconv/ops/conv.py", "grad_w[:] = winograd_backward_weights(",
             "grad_w[:] = -winograd_backward_weights(")],
           ["tests/ops/test_conv.py", "tests/ops/test_winograd.py", "tests/test_network_sgd.py"]),
    Mutant("tanh_grad_unfused", "tanh's derivative taken as 1 - y in the kernels (every path)",
           [("cconv/_kernels/_activations.pxd.tp",
             "        return cconv_{{V}}_mul(g, cconv_{{V}}_sub(cconv_{{V}}_c(1.0), "
             "cconv_{{V}}_mul(y, y)));\n",
             "        return cconv_{{V}}_mul(g, cconv_{{V}}_sub(cconv_{{V}}_c(1.0), y));\n")],
           ["tests/ops/test_elementwise.py", "tests/test_network_sgd.py", "tests/test_model.py"]),
    # ---- the activation table ----
    Mutant("kernel_ignores_sigmoid", "the sigmoid kernel returns its input (a forgotten "
           "branch run as linear)",
           [("cconv/_kernels/_activations.pxd.tp",
             "        cconv_{{V}}_sigmoid2(x, &s, &sm);\n        return s;\n",
             "        cconv_{{V}}_sigmoid2(x, &s, &sm);\n        return x;\n")],
           ["tests/ops/test_activations.py", "tests/test_network_sgd.py",
            "tests/test_keras_activations.py"]),
    Mutant("gradient_from_wrong_side", "a layer hands an activation's backward its output "
           "where the table says its input (gelu, silu, elu...)",
           [("cconv/layers.py",
             '        source = "y" if self.activation.gradient_from == "output" else "z"\n',
             '        source = "y"\n')],
           ["tests/test_network_sgd.py", "tests/test_keras_activations.py"]),
    Mutant("gelu_grad_density_sign", "gelu's derivative Phi(x) - x phi(x) instead of "
           "Phi(x) + x phi(x)",
           [("cconv/_kernels/_activations.pxd.tp",
             "        return cconv_{{V}}_mul(g, cconv_{{V}}_fma(xc, phi, cdf));\n",
             "        return cconv_{{V}}_mul(g, cconv_{{V}}_fma(xc, cconv_{{V}}_sub("
             "cconv_{{V}}_zero(), phi), cdf));\n")],
           ["tests/ops/test_activations.py", "tests/test_network_sgd.py",
            "tests/test_keras_activations.py"]),
    Mutant("oracle_gradient_from_output", "the oracle's table says elu's derivative comes "
           "from the output (the kernels' codes unchanged)",
           [("cconv/activations.py", '    ("elu", (), 6, "input", False,',
             '    ("elu", (), 6, "output", False,')],
           ["tests/ops/test_activations.py", "tests/test_gradcheck.py",
            "tests/test_network_sgd.py"]),
    Mutant("tanh_grad_fused", "tanh's derivative taken as 1 - y in the fused dense backward",
           [("cconv/ops/fused.py", "keep_scale(y.dtype, rate), y, act, grad_x,",
             "keep_scale(y.dtype, rate), y, check_activation(None) if activation == 'tanh' "
             "else act, grad_x,"),
            ("cconv/ops/fused.py", "                                                 "
             "get_num_threads())\n    return grad_x\n",
             "                                                 get_num_threads())\n"
             "        if activation == 'tanh':\n            grad_x *= 1 - y\n    return grad_x\n")],
           ["tests/ops/test_fused.py", "tests/test_fusion.py", "tests/test_network_sgd.py"]),
    Mutant("maxpool_ties_last", "max pooling: a tie in a 2x2 window goes to the later pixel "
           "(kernel: _convpool.pxd, which max_pool2d and the fused conv+pool share)",
           [("cconv/_kernels/_convpool.pxd", "            v = p[F + c]\n            t = v > m\n",
             "            v = p[F + c]\n            t = v >= m\n")],
           ["tests/ops/test_pool.py", "tests/ops/test_fused.py", "tests/test_fusion.py",
            "tests/test_network_sgd.py"]),
    Mutant("conv_bias_grad_dropped", "conv bias gradient left at zero (both conv paths)",
           [("cconv/ops/conv.py", "    grad_b = partial_b.sum(axis=0)\n",
             "    grad_b = 0 * partial_b.sum(axis=0)\n"),
            ("cconv/ops/conv.py", "    grad_b = grad_out.reshape(-1, f).sum(axis=0, dtype=np.float64)",
             "    grad_b = 0 * grad_out.reshape(-1, f).sum(axis=0, dtype=np.float64)")],
           ["tests/ops/test_conv.py", "tests/test_network_sgd.py", "tests/test_model.py"]),
    Mutant("dropout_forward_unscaled", "dropout's forward pass scales kept inputs by 1, "
           "not 1 / (1 - rate)",
           [("cconv/ops/elementwise.py", "    scale = keep_scale(x.dtype, rate)\n",
             "    scale = x.dtype.type(1)\n")],
           ["tests/ops/test_elementwise.py", "tests/test_semantics.py",
            "tests/test_network_sgd.py", "tests/test_model.py"]),
    Mutant("dropout_fused_backward_unscaled", "the fused dense backward scales dropout's "
           "gradient by 1",
           [("cconv/ops/fused.py", "keep_scale(y.dtype, rate), y, act, grad_x,",
             "y.dtype.type(1), y, act, grad_x,")],
           ["tests/ops/test_fused.py", "tests/test_fusion.py", "tests/test_network_sgd.py"]),
    Mutant("adam_no_bias_correction", "Adam's step without the bias corrections",
           [("cconv/ops/optim.py",
             "    alpha = lr * np.sqrt(1.0 - b2 ** int(step)) / (1.0 - b1 ** int(step))\n",
             "    alpha = lr\n")],
           ["tests/ops/test_optim.py", "tests/test_model.py"]),
    # ---- the API ----
    Mutant("evaluate_skips_last_batch", "evaluate (and validation) skips the last batch",
           [("cconv/model.py", "        for start, stop, batches in self._chunks(len(x[0]), "
                               "batch_size):\n            tb = _rows(target",
             "        for start, stop, batches in self._chunks(len(x[0]) - batch_size, "
             "batch_size):\n            tb = _rows(target")],
           ["tests/test_model.py", "tests/test_callbacks.py", "tests/test_semantics.py"]),
    Mutant("mnist_labels_shifted", "MNIST labels paired with the wrong images (each image "
           "gets its neighbour's label) [MNIST]",
           [("cconv/datasets/_common.py", "    return (x_train, y_train), (x_test, y_test)\n",
             "    return (x_train, np.roll(y_train, 1)), (x_test, np.roll(y_test, 1))\n")],
           ["tests/test_datasets.py", "tests/test_mnist_e2e.py"]),
    Mutant("save_weights_reversed", "save_weights writes the arrays in reverse order "
           "(load_weights unchanged)",
           [("cconv/saving.py", "zip(_npz_names(model), layers_module.weight_keys(model.layers))}",
             "zip(_npz_names(model), list(layers_module.weight_keys(model.layers))[::-1])}")],
           ["tests/test_model.py", "tests/test_semantics.py", "tests/test_reliability.py",
            "tests/test_cli.py::test_train_tf_preset"]),
    Mutant("convpool_relu_grad_for_tanh", "fused conv+pool backward applies relu's "
           "derivative to a tanh conv",
           [("cconv/fusion.py",
             "grad = ops.activation_backward(conv.activation.name, self.saved[\"y\"], grad)",
             "grad = ops.activation_backward(\"relu\" if conv.activation.name == \"tanh\" "
             "else conv.activation.name, self.saved[\"y\"], grad)")],
           ["tests/test_fusion.py", "tests/test_network_sgd.py"]),
    # ---- Keras's semantics ----
    Mutant("shuffle_ignored", "fit ignores shuffle=True",
           [("cconv/model.py", "order = rng.permutation(n) if shuffle else np.arange(n)",
             "order = np.arange(n)")],
           ["tests/test_semantics.py", "tests/test_model.py"]),
    Mutant("validation_split_first", "validation_split holds out the first fraction, not "
           "the last",
           [("cconv/model.py", "            val = (_rows(x, split_at, None), _rows(target, "
             "split_at, None),\n",
             "            val = (_rows(x, 0, n - split_at), _rows(target, 0, n - split_at),\n"),
            ("cconv/model.py", "            x, target = _rows(x, 0, split_at), _rows(target, 0, "
             "split_at)\n",
             "            x, target = _rows(x, n - split_at, None), _rows(target, n - split_at, "
             "None)\n")],
           ["tests/test_semantics.py", "tests/test_model.py"]),
    Mutant("momentum_never_decays", "SGD's velocity is never multiplied by momentum",
           [("cconv/ops/optim.py", "s[\"momentums\"], lr, mu,\n",
             "s[\"momentums\"], lr, 0.0,\n")],
           ["tests/test_semantics.py", "tests/test_model.py", "tests/ops/test_optim.py"]),
    Mutant("glorot_limit_sqrt3", "glorot_uniform's limit sqrt(3 / (fan_in + fan_out))",
           [("cconv/initializers.py", "    _args = (1.0, \"fan_avg\", \"uniform\")\n",
             "    _args = (0.5, \"fan_avg\", \"uniform\")\n")],
           ["tests/test_initializers.py", "tests/test_model.py"]),
    Mutant("history_accuracy_last_batch", "fit's history reports the last batch's "
           "accuracy as the epoch's",
           [("cconv/model.py", "                    break\n"
             "            logs = tally.logs()\n",
             "                    break\n"
             "            logs = tally.logs()\n"
             "            if self.metrics:\n"
             "                last = self._new_tally()\n"
             "                last.add(batch)\n"
             "                logs[self.metrics[0]] = last.logs()[self.metrics[0]]\n")],
           ["tests/test_semantics.py", "tests/test_callbacks.py", "tests/test_model.py"]),
    Mutant("softmax_backward_drops_term", "softmax's own backward pass (not folded into "
           "the loss) drops the - sum(g * y) term",
           [("cconv/ops/elementwise.py",
             "    return y * (grad_out - (grad_out * y).sum(axis=axes, keepdims=True))\n",
             "    return y * grad_out\n")],
           ["tests/test_semantics.py", "tests/test_model.py",
            "tests/ops/test_activation_options.py"]),
    Mutant("dropout_layer_backward_unscaled", "the standalone Dropout layer's backward "
           "scales by 1, not 1 / (1 - rate)",
           [("cconv/layers.py",
             "        return ops.dropout_backward(grad, self.saved[\"mask\"], self.rate)\n",
             "        return ops.dropout_backward(grad, self.saved[\"mask\"], 0.0)\n")],
           ["tests/test_semantics.py", "tests/test_network_sgd.py", "tests/test_model.py"]),
    Mutant("weights_file_reversed", "save_weights and load_weights both reverse the order: a "
           "wrong file format that round-trips",
           [("cconv/saving.py", "    return [f\"{i:03d}.{layer.name}.{k}\"\n",
             "    return [f\"{999 - i:03d}.{layer.name}.{k}\"\n")],
           ["tests/test_semantics.py", "tests/test_model.py", "tests/test_reliability.py",
            "tests/test_cli.py::test_train_tf_preset"]),
    # ---- issue 21: cconv.initializers ----
    Mutant("variance_scaling_fan_in_is_fan_out", "VarianceScaling's mode fan_in divides by "
           "fan_out", [("cconv/initializers.py", "        n = {\"fan_in\": fan_in, ",
                        "        n = {\"fan_in\": fan_out, ")],
           ["tests/test_initializers.py::test_variance_scaling_modes_and_distributions",
            "tests/test_initializers.py::test_he_and_lecun_take_the_fan_in_of_a_conv_kernel",
            "tests/test_initializers.py::test_names_in_layers_draw_keras_distribution"]),
    Mutant("orthogonal_unsigned", "Orthogonal without the sign correction (Q of QR as "
           "numpy returns it)",
           [("cconv/initializers.py", "        q = q * np.sign(np.diag(r))\n", "")],
           ["tests/test_initializers.py::"
            "test_orthogonal_is_the_sign_corrected_q_of_the_seeded_normal_draw",
            "tests/test_initializers.py::test_orthogonal_signs_make_it_uniform_over_rotations"]),
    Mutant("he_normal_scale_one", "HeNormal with LeCun's scale 1 instead of 2",
           [("cconv/initializers.py", "    _args = (2.0, \"fan_in\", \"truncated_normal\")\n",
             "    _args = (1.0, \"fan_in\", \"truncated_normal\")\n")],
           ["tests/test_initializers.py::test_each_class_draws_keras_distribution",
            "tests/test_initializers.py::test_names_in_layers_draw_keras_distribution"]),
    Mutant("seed_ignored", "a seeded initializer draws from the model's generator",
           [("cconv/initializers.py", "            rng = np.random.default_rng(self.seed)\n",
             "            rng = rng or utils._rng()\n")],
           ["tests/test_initializers.py::test_seeded_initializers_repeat_their_bits",
            "tests/test_initializers.py::"
            "test_seeded_initializer_in_a_layer_gives_the_same_kernel_in_every_model",
            "tests/test_initializers.py::test_seeded_initializers_cross_a_keras_file"]),
    # ---- issue 22: input_shape= on a first layer, Dense on any rank ----
    Mutant("input_shape_hint_ignored", "input_shape= on a Sequential's first layer is "
           "accepted but never becomes the model's input",
           [("cconv/model.py", "            self.input_shape = hint\n",
             "            self.input_shape = None\n")],
           ["tests/test_input_shape.py::"
            "test_every_layer_takes_input_shape_first_and_builds_the_model",
            "tests/test_input_shape.py::test_tf_cnn_tutorial_model",
            "tests/test_keras_shapes.py::test_input_shape_model_files_match_keras_both_ways"]),
    Mutant("dense_nd_grad_rows_misaligned", "Dense above rank 2: backward pairs the batch's "
           "gradient rows with the wrong samples (batch order reversed)",
           [("cconv/layers.py",
             "        rows = grad if grad.ndim == 2 else grad.reshape(-1, self.units)\n",
             "        rows = grad if grad.ndim == 2 else grad[::-1].reshape(-1, self.units)\n")],
           ["tests/test_dense_any_rank.py::test_forward_and_backward_match_the_oracle_on_rows",
            "tests/test_dense_any_rank.py::test_each_row_has_the_flat_layers_bits",
            "tests/test_keras_shapes.py::"
            "test_dense_on_any_rank_one_sgd_step_gives_keras_weights"]),
    Mutant("legacy_initializer_names_dropped", "files naming cconv.presets>tutorial_* no "
           "longer load", [("cconv/initializers.py",
                            "LEGACY_NAMES = {\"cconv.presets>tutorial_normal\": tutorial_normal,",
                            "LEGACY_NAMES = {\"cconv.presets>tutorial_normalX\": tutorial_normal,")],
           ["tests/test_initializers.py::"
            "test_tutorial_initializers_round_trip_by_name_and_by_their_legacy_names",
            "tests/test_initializers.py::"
            "test_a_keras_file_naming_the_legacy_tutorial_initializers_loads"]),
    # ---- issue 22: Rescaling, Reshape, ZeroPadding2D, global pooling ----
    Mutant("rescale_grad_unscaled", "Rescaling's backward passes the gradient through "
           "without multiplying it by scale",
           [("cconv/ops/spatial.py",
             '    return np.multiply(grad_out, _factor_array("scale", scale, grad_out))\n',
             "    return grad_out.copy()\n")],
           ["tests/ops/test_spatial.py::test_rescale",
            "tests/ops/test_spatial.py::test_gradients_are_finite_differences",
            "tests/test_keras_reshaping.py::test_one_sgd_step_gives_keras_weights"]),
    Mutant("reshape_grad_fortran_order", "Reshape's backward reshapes the gradient in "
           "Fortran order (values paired with the wrong inputs and samples)",
           [("cconv/layers.py",
             "        return x.reshape((x.shape[0],) + self.output_shape)\n\n"
             "    def backward_linear(self, grad):\n"
             "        return grad.reshape((grad.shape[0],) + self.input_shape)\n",
             "        return x.reshape((x.shape[0],) + self.output_shape)\n\n"
             "    def backward_linear(self, grad):\n"
             "        return grad.reshape((grad.shape[0],) + self.input_shape, order=\"F\")\n")],
           ["tests/test_keras_reshaping.py::test_one_sgd_step_gives_keras_weights",
            "tests/test_keras_reshaping.py::"
            "test_gradients_through_the_model_are_finite_differences"]),
    Mutant("zero_pad_grad_top_is_bottom", "zero_pad2d's backward crops the bottom padding "
           "from the top (wrong rows when top != bottom)",
           [("cconv/ops/spatial.py",
             "    return np.ascontiguousarray(grad_out[:, top:top + h, left:left + w])\n",
             "    return np.ascontiguousarray(grad_out[:, bottom:bottom + h, left:left + w])\n")],
           ["tests/ops/test_spatial.py::test_zero_pad2d",
            "tests/ops/test_spatial.py::test_gradients_are_finite_differences",
            "tests/test_keras_reshaping.py::test_one_sgd_step_gives_keras_weights",
            "tests/test_keras_reshaping.py::"
            "test_gradients_through_the_model_are_finite_differences"]),
    Mutant("global_max_ties_last", "global max pooling: a tie goes to the last pixel in "
           "row-major order, not the first (as MaxPooling2D's)",
           [("cconv/ops/spatial.py",
             "    argmax = flat.argmax(axis=1)  # the first maximum\n",
             "    argmax = h * w - 1 - flat[:, ::-1].argmax(axis=1)\n")],
           ["tests/ops/test_spatial.py::test_global_pools",
            "tests/ops/test_spatial.py::"
            "test_global_max_pool2d_tie_goes_to_the_first_pixel_in_row_major_order"]),
    # ---- issue 13: the book's speed-ups, out=, the adapting thread count ----
    Mutant("blank_span_short", "conv2d_dense skips one live output column too many at a "
           "blank margin's edge",
           [("cconv/_kernels/_conv_1ch.pyx.tp", "    hi = min(OW, last + 1)\n",
             "    hi = min(OW, last)\n")],
           ["tests/ops/test_fused.py", "tests/test_book.py"]),
    Mutant("blank_skip_nonfinite", "conv2d_dense skips blank windows even beside an inf or "
           "NaN weight",
           [("cconv/ops/fused.py", "zero_at_zero(activation) and np.isfinite(w).all() \\\n"
             "            and np.isfinite(dense_w).all()", "zero_at_zero(activation)")],
           ["tests/ops/test_fused.py",
            "tests/test_fusion.py::test_blank_images_meet_a_nonfinite_weight_as_the_layers_do"]),
    Mutant("blank_skip_any_activation", "conv2d_dense skips blank windows whatever the "
           "activation (sigmoid's 0.5 at 0 then never reaches the logits)",
           [("cconv/ops/fused.py", "skip_blank = not b.size and zero_at_zero(activation) and ",
             "skip_blank = not b.size and ")],
           ["tests/test_fusion.py::test_blank_images_through_every_fused_activation",
            "tests/ops/test_fused.py::test_conv2d_dense_skips_blank_windows_exactly"]),
    Mutant("coin_flips_state_kept", "legacy_coin_flips draws without advancing the state",
           [("cconv/ops/random.py", "    set_state(state)\n", "")],
           ["tests/ops/test_random.py", "tests/test_book.py"]),
    Mutant("out_overlap_unchecked", "an out= array that overlaps the op's input is accepted",
           [("cconv/ops/_checks.py", "        if np.may_share_memory(out, a) and not",
             "        if False and not")],
           ["tests/ops/test_elementwise.py", "tests/ops/test_fused.py",
            "tests/ops/test_conv.py"]),
    Mutant("governor_ignores_preemption", "the thread count drops on a CPU-time shortfall "
           "alone (threads asleep on a quiet machine)",
           [("cconv/_config.py", " * self._wall and self._preempted > 0\n", " * self._wall\n")],
           ["tests/test_governor.py::test_quiet_readings_keep_every_core",
            "tests/test_governor.py::test_a_try_is_kept_when_the_shortfall_is_only_sleep"]),
    Mutant("governor_never_probes", "once lowered, the thread count never tries more threads",
           [("cconv/_config.py", "        elif self.threads < self.cores and now >= "
             "self._next_probe:\n", "        elif False:\n")],
           ["tests/test_governor.py::test_probes_one_more_thread_backing_off_while_held_up",
            "tests/test_governor.py::test_fewer_threads_beside_busy_processes_and_back_after"]),
    # ---- activation layers ----
    Mutant("leaky_relu_slope_ignored", "LeakyReLU runs the table's leaky_relu (slope 0.2) "
           "whatever its negative_slope",
           [("cconv/layers.py",
             '        return "leaky_relu" if self.negative_slope == activations.LEAKY_SLOPE '
             'else None\n', '        return "leaky_relu"\n')],
           ["tests/test_keras_activation_layers.py::test_same_weights_same_outputs_as_keras",
            "tests/test_keras_activation_layers.py::test_one_sgd_step_gives_keras_weights"]),
    Mutant("elu_alpha_lost_in_backward", "ELU's backward pass takes alpha as 1",
           [("cconv/ops/elementwise.py",
             "    _elementwise.elu_backward(x.reshape(-1), grad_out.reshape(-1), "
             "out.reshape(-1), alpha,\n",
             "    _elementwise.elu_backward(x.reshape(-1), grad_out.reshape(-1), "
             "out.reshape(-1), 1.0,\n")],
           ["tests/ops/test_activation_options.py", "tests/test_keras_activation_layers.py"]),
    Mutant("softmax_axes_ignored", "softmax over chosen axes runs over the last axis",
           [("cconv/ops/elementwise.py",
             "    e = np.exp(x - x.max(axis=axes, keepdims=True))\n"
             "    return e / e.sum(axis=axes, keepdims=True)\n",
             "    e = np.exp(x - x.max(axis=-1, keepdims=True))\n"
             "    return e / e.sum(axis=-1, keepdims=True)\n")],
           ["tests/ops/test_activation_options.py", "tests/test_keras_activation_layers.py"]),
    # ---- datasets ----
    Mutant("cifar_not_transposed", "CIFAR-10's channels-first test images reshaped to "
           "channels last instead of transposed",
           [("cconv/datasets/cifar10.py", "x_test, y_test = test[0].transpose(0, 2, 3, 1), ",
             "x_test, y_test = test[0].reshape(-1, 32, 32, 3), ")],
           ["tests/test_datasets_cifar10.py::test_load_data_every_layout",
            "tests/test_datasets_cifar10.py::test_channels_last_pixel_by_pixel",
            "tests/test_datasets_cifar10.py::test_binary_and_python_give_the_same_arrays"]),
    Mutant("cifar_label_byte_as_pixel", "binary CIFAR-10 batches: each image read one byte "
           "early, its label byte taken as its first red pixel",
           [("cconv/datasets/cifar10.py", "    return records[:, 1:].reshape(",
             "    return records[:, :-1].reshape(")],
           ["tests/test_datasets_cifar10.py::test_load_data_every_layout",
            "tests/test_datasets_cifar10.py::test_channels_last_pixel_by_pixel",
            "tests/test_datasets_cifar10.py::test_binary_and_python_give_the_same_arrays"]),
    Mutant("cifar_python_labels_shifted", "python CIFAR-10 batches: each image gets its "
           "neighbour's label",
           [("cconv/datasets/cifar10.py", "    labels = np.array(labels, dtype=np.uint8)\n",
             "    labels = np.roll(np.array(labels, dtype=np.uint8), 1)\n")],
           ["tests/test_datasets_cifar10.py::test_load_data_every_layout",
            "tests/test_datasets_cifar10.py::test_python_batch_parsed_as_keras_parses_it",
            "tests/test_datasets_cifar10.py::test_binary_and_python_give_the_same_arrays"]),
    Mutant("cifar_unpickler_resolves_globals", "python CIFAR-10 batches unpickled as pickle "
           "does: numpy's real functions, and os.system, run",
           [("cconv/datasets/cifar10.py", "            return _GLOBALS[(module, name)]\n",
             "            return super().find_class(module, name)\n")],
           ["tests/test_datasets_cifar10.py::test_bad_python_batch_is_refused_without_running_anything",
            "tests/test_datasets_cifar10.py::test_numpy_is_never_called_to_unpickle"]),
    Mutant("download_checksum_skipped", "a download is kept whatever its SHA-256",
           [("cconv/datasets/_common.py", "        if digest.hexdigest() != sha256:\n",
             "        if False:\n")],
           ["tests/test_datasets.py", "tests/test_datasets_cifar10.py",
            "tests/test_datasets_fashion_mnist.py"]),
    Mutant("fashion_train_test_swapped", "Fashion-MNIST returns (test, train)",
           [("cconv/datasets/fashion_mnist.py", "        data = load_idx_set(folder, found)\n",
             "        data = load_idx_set(folder, found)[::-1]\n")],
           ["tests/test_datasets_fashion_mnist.py::test_load_data_from_folder",
            "tests/test_datasets_fashion_mnist.py::test_same_arrays_as_keras",
            "tests/test_datasets_fashion_mnist.py::test_lookup_order"]),
    # ---- callbacks ----
    Mutant("rlrop_cooldown_ignored", "ReduceLROnPlateau starts no cooldown after a reduction",
           [("cconv/callbacks.py", "                self.cooldown_counter = self.cooldown\n",
             "                self.cooldown_counter = 0\n")],
           ["tests/test_callbacks.py::test_reduce_lr_on_plateau_by_hand",
            "tests/test_keras_callbacks.py::test_reduce_lr_on_plateau_as_keras",
            "tests/test_keras_callbacks.py::test_reduce_lr_on_plateau_long_runs_as_keras"]),
    Mutant("min_delta_sign_max", "in max mode, min_delta is added to the value instead of "
           "taken from it (EarlyStopping, ReduceLROnPlateau)",
           [("cconv/callbacks.py", "        return value - delta > reference\n",
             "        return value + delta > reference\n")],
           ["tests/test_callbacks.py::test_early_stopping_max_mode_for_accuracy",
            "tests/test_callbacks.py::test_reduce_lr_on_plateau_by_hand",
            "tests/test_keras_callbacks.py::test_early_stopping_as_keras", "tests/test_keras_callbacks.py::test_reduce_lr_on_plateau_as_keras"]),
    Mutant("csv_append_rewrites_header", "CSVLogger(append=True) writes a header into a "
           "file that has content",
           [("cconv/callbacks.py", "        self._write_header = not self._data\n",
             "        self._write_header = True\n")],
           ["tests/test_callbacks.py::test_csv_logger_rows_match_history",
            "tests/test_callbacks.py::test_csv_logger_append_keeps_the_file_and_writes_this_runs_columns",
            "tests/test_keras_callbacks.py::test_csv_logger_writes_keras_bytes"]),
    Mutant("csv_columns_from_the_file", "CSVLogger(append=True) reads its columns back from "
           "the file's first line (the bug fixed: other names dropped, all if it was blank)",
           [("cconv/callbacks.py", "            self.keys = sorted(logs)\n",
             "            first = self._data.split(b\"\\n\")[0].decode().rstrip(\"\\r\")\n"
             "            self.keys = next(csv.reader([first], delimiter=self.separator), "
             "[])[1:] if self._data else sorted(logs)\n")],
           ["tests/test_callbacks.py::test_csv_logger_append_keeps_the_file_and_writes_this_runs_columns",
            "tests/test_keras_callbacks.py::test_csv_logger_writes_keras_bytes"]),
    Mutant("early_stopping_tie_improves", "a value equal to the best counts as an "
           "improvement (min mode)",
           [("cconv/callbacks.py", "            return value + delta < reference\n",
             "            return value + delta <= reference\n")],
           ["tests/test_callbacks.py::test_early_stopping_by_hand", "tests/test_keras_callbacks.py::test_early_stopping_as_keras",
            "tests/test_keras_callbacks.py::test_checkpoint_as_keras"]),
    Mutant("lrs_epoch_plus_one", "LearningRateScheduler hands the schedule epoch + 1",
           [("cconv/callbacks.py", "            new_lr = self.schedule(epoch, lr)\n",
             "            new_lr = self.schedule(epoch + 1, lr)\n")],
           ["tests/test_callbacks.py::test_learning_rate_scheduler_in_a_real_fit",
            "tests/test_keras_callbacks.py::test_learning_rate_scheduler_as_keras"]),
    Mutant("checkpoint_threshold_ignored", "ModelCheckpoint starts from no best whatever "
           "initial_value_threshold says",
           [("cconv/callbacks.py", "        self.best = _finite(\"ModelCheckpoint\", "
             "\"initial_value_threshold\",\n",
             "        self.best = None and _finite(\"ModelCheckpoint\", "
             "\"initial_value_threshold\",\n")],
           ["tests/test_callbacks.py::test_checkpoint_initial_value_threshold_by_hand",
            "tests/test_keras_callbacks.py::test_checkpoint_as_keras"]),
    Mutant("checkpoint_batch_count_per_epoch", "save_freq=N restarts its count of batches "
           "each epoch (Keras counts across epochs)",
           [("cconv/callbacks.py", "        self._last_batch_seen = batch\n",
             "        self._last_batch_seen = batch\n"
             "        self._batches_seen_since_last_saving *= batch > 0\n")],
           ["tests/test_callbacks.py::test_checkpoint_every_n_batches_by_hand",
            "tests/test_keras_callbacks.py::test_checkpoint_as_keras"]),
    # ---- losses ----
    Mutant("label_smoothing_twice", "label smoothing applied to the already smoothed labels",
           [("cconv/losses.py", "        target = self.smoothed(target)\n",
             "        target = self.smoothed(self.smoothed(target))\n")],
           ["tests/test_keras_losses.py::test_loss_value_and_gradient_are_keras",
            "tests/test_keras_losses.py::test_label_smoothing_by_hand",
            "tests/test_keras_losses.py::test_one_sgd_step_with_each_loss_is_keras",
            "tests/test_keras_losses.py::test_weighted_fit_is_keras"]),
    Mutant("label_smoothing_classes_minus_one", "categorical label smoothing spreads s over "
           "classes - 1 instead of classes",
           [("cconv/losses.py", "        return target * (1 - self.label_smoothing) + "
             "self.label_smoothing / k\n",
             "        return target * (1 - self.label_smoothing) + "
             "self.label_smoothing / (k - 1)\n")],
           ["tests/test_keras_losses.py::test_loss_value_and_gradient_are_keras",
            "tests/test_keras_losses.py::test_label_smoothing_by_hand",
            "tests/test_keras_losses.py::test_one_sgd_step_with_each_loss_is_keras",
            "tests/test_keras_losses.py::test_weighted_fit_is_keras"]),
    Mutant("sample_weight_over_weight_sum", "weighted losses divided by the weights' sum "
           "instead of the sample count (Keras's \"mean_with_sample_weight\", not its "
           "default)",
           [("cconv/model.py", "factor = (np.ones(n) if weights is None else weights) / n",
             "factor = (np.ones(n) if weights is None else weights) / (n if weights is None "
             "else weights.sum())"),
            ("cconv/metrics.py", "        logs = {prefix + \"loss\": loss / count if count "
             "else 0.0}", "        logs = {prefix + \"loss\": loss / weight if weight "
             "else 0.0}")],
           ["tests/test_keras_losses.py::test_weighted_fit_is_keras",
            "tests/test_keras_losses.py::test_evaluate_with_sample_weight_is_keras",
            "tests/test_keras_losses.py::test_weights_reduce_over_the_sample_count",
            "tests/test_keras_losses.py::test_sample_weight_scales_the_step"]),
    Mutant("binary_accuracy_threshold_zero", "binary_accuracy thresholds at 0 instead of 0.5",
           [("cconv/metrics.py", "BINARY_THRESHOLD = 0.5", "BINARY_THRESHOLD = 0.0")],
           ["tests/test_keras_losses.py::test_weighted_fit_is_keras",
            "tests/test_keras_losses.py::test_evaluate_with_sample_weight_is_keras",
            "tests/test_keras_losses.py::test_compile_config_crosses_both_ways"]),
    Mutant("class_weight_off_by_one", "class_weight's key k weighs the samples of class k + 1",
           [("cconv/model.py", "            weights[labels == key] = value\n",
             "            weights[labels == key + 1] = value\n")],
           ["tests/test_keras_losses.py::test_weighted_fit_is_keras",
            "tests/test_keras_losses.py::test_class_weight_is_per_sample_weights_by_class"]),
    Mutant("weighted_metrics_unweighted", "weighted_metrics ignore the sample weights",
           [("cconv/metrics.py", "if self.n_loss <= i < self.n_loss + self.n_plain else "
             "float((w * v).sum())", "if True else float((w * v).sum())")],
           ["tests/test_keras_losses.py::test_weighted_fit_is_keras",
            "tests/test_keras_losses.py::test_evaluate_with_sample_weight_is_keras",
            "tests/test_keras_losses.py::test_weights_reduce_over_the_sample_count"]),
    Mutant("folded_sigmoid_grad_of_minus_z", "the folded sigmoid's gradient is sigmoid(-z) - y",
           [("cconv/losses.py", "np.exp(z - softplus) - target", "np.exp(-softplus) - target")],
           ["tests/test_keras_losses.py::test_loss_value_and_gradient_are_keras",
            "tests/test_keras_losses.py::test_loss_gradient_is_the_finite_difference",
            "tests/test_keras_losses.py::test_one_sgd_step_with_each_loss_is_keras",
            "tests/test_keras_losses.py::test_folded_sigmoid_where_it_differs_from_keras"]),
    # ---- strides ----
    Mutant("stride_rows_only", "the strided conv route gathers columns with the row stride",
           [("cconv/ops/conv.py",
             "        self.args = (self.oh, self.ow, self.kh, self.kw, sh, sw, dh, dw) + "
             "tuple(pads)\n",
             "        self.args = (self.oh, self.ow, self.kh, self.kw, sh, sh, dh, dw) + "
             "tuple(pads)\n")],
           ["tests/ops/test_strided.py::test_strided_conv2d",
            "tests/ops/test_strided.py::test_strided_conv2d_backward",
            "tests/test_keras_strides.py::test_conv2d_is_keras_ops_conv",
            "tests/test_keras_strides.py::test_same_weights_same_outputs_as_keras"]),
    Mutant("same_extra_pixel_on_top", "'same' padding puts its odd pixel on the top and left "
           "(Keras puts it at the bottom and right)",
           [("cconv/ops/_windows.py", "    return max(total - size, 0) // 2\n",
             "    return -(-max(total - size, 0) // 2)\n")],
           ["tests/ops/test_strided.py::test_conv_geometry_is_keras",
            "tests/test_keras_strides.py::test_conv2d_is_keras_ops_conv",
            "tests/test_keras_strides.py::test_pools_are_keras_ops_pools",
            "tests/test_keras_strides.py::test_same_weights_same_outputs_as_keras"]),
    Mutant("dilation_ignored_backward", "conv2d_backward's strided route gathers undilated "
           "patches",
           [("cconv/ops/conv.py",
             "    p = _Patches(x.shape, w.shape, grad_out.shape, pads, steps, x.dtype)\n",
             "    p = _Patches(x.shape, w.shape, grad_out.shape, pads, (steps[0], (1, 1)), "
             "x.dtype)\n")],
           ["tests/ops/test_strided.py::test_strided_conv2d_backward",
            "tests/ops/test_strided.py::test_strided_conv2d_gradients_by_finite_differences",
            "tests/test_keras_strides.py::test_one_sgd_step_gives_keras_weights",
            "tests/test_keras_strides.py::"
            "test_gradients_through_the_model_are_finite_differences"]),
    Mutant("avg_pool_full_window_at_border", "average pooling divides by the whole window "
           "at the border, counting 'same' padding's zeros",
           [("cconv/_kernels/_pool.pyx",
             "                count = (y1 - y0) * (x1 - x0)\n                for c in range(C):\n",
             "                count = ph * pw\n                for c in range(C):\n")],
           ["tests/ops/test_strided.py::test_avg_pool2d",
            "tests/ops/test_strided.py::test_avg_pool2d_counts_only_the_image_at_the_border",
            "tests/test_keras_strides.py::test_pools_are_keras_ops_pools",
            "tests/test_keras_strides.py::test_same_weights_same_outputs_as_keras"]),
    # ---- bn ----
    Mutant("bn_moving_update_in_inference", "BatchNormalization moves its moving statistics "
           "toward the batch's in inference mode too (predict, evaluate, a frozen layer)",
           [("cconv/layers.py",
             "            y = ops.batch_norm_inference(x, p[\"moving_mean\"], "
             "p[\"moving_variance\"],\n",
             "            p[\"moving_mean\"] = p[\"moving_mean\"] * self.dtype.type("
             "self.momentum) + ops.norm.moments(x)[0].astype(self.dtype) * self.dtype.type("
             "1 - self.momentum)\n"
             "            y = ops.batch_norm_inference(x, p[\"moving_mean\"], "
             "p[\"moving_variance\"],\n")],
           ["tests/test_keras_batchnorm.py", "tests/test_trainable.py"]),
    Mutant("bn_momentum_swapped", "moving statistics updated as moving * (1 - momentum) + "
           "batch * momentum",
           [("cconv/layers.py", "            keep = self.dtype.type(self.momentum)\n"
             "            take = self.dtype.type(1.0 - self.momentum)\n",
             "            take = self.dtype.type(self.momentum)\n"
             "            keep = self.dtype.type(1.0 - self.momentum)\n")],
           ["tests/test_keras_batchnorm.py", "tests/test_trainable.py"]),
    Mutant("frozen_layer_still_updated", "the optimizer updates the weights of frozen layers",
           [("cconv/layers.py", "        if (trainable or {}).get(layer, layer.trainable):\n",
             "        if True:\n")],
           ["tests/test_keras_batchnorm.py", "tests/test_trainable.py"]),
    Mutant("fold_ignores_epsilon", "FoldBatchNorm divides by sqrt(moving_variance), without "
           "epsilon",
           [("cconv/fusion.py", "np.sqrt(var.astype(np.float64) + norm.epsilon)",
             "np.sqrt(var.astype(np.float64))")],
           ["tests/test_batchnorm_fold.py", "tests/test_keras_batchnorm.py"]),
    Mutant("bn_unbiased_variance", "the batch variance divided by M - 1 (unbiased) instead "
           "of M, as Keras",
           [("cconv/ops/norm.py", "    var /= m\n", "    var /= max(m - 1, 1)\n")],
           ["tests/ops/test_norm.py", "tests/test_keras_batchnorm.py",
            "tests/test_trainable.py"]),
    # ---- optim ----
    Mutant("sgd_nesterov_ignored", "SGD(nesterov=True) steps as plain momentum",
           [("cconv/optimizers/__init__.py",
             "ops.sgd_update(p, g, m, learning_rate, self.momentum, self.nesterov)",
             "ops.sgd_update(p, g, m, learning_rate, self.momentum, False)")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("rmsprop_rho_swapped", "RMSprop's moving averages weigh by 1 - rho and rho "
           "swapped",
           [("cconv/ops/optim.py", "s[\"average_gradient\"], lr, r, 1.0 - r, mu,",
             "s[\"average_gradient\"], lr, 1.0 - r, r, mu,")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("clipnorm_global", "clipnorm clips by the norm of all gradients together",
           [("cconv/optimizers/__init__.py", "norm = math.sqrt(_sum_of_squares(g))",
             "norm = math.sqrt(math.fsum(_sum_of_squares(h) for h in grads))")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("schedule_off_by_one", "a schedule is read one step ahead (after the increment)",
           [("cconv/optimizers/__init__.py",
             "return float(self._learning_rate(self.iterations))",
             "return float(self._learning_rate(self.iterations + 1))")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("amsgrad_max_not_kept", "Adam(amsgrad=True) updates copies of velocity_hat: "
           "the maximum is not kept",
           [("cconv/optimizers/__init__.py",
             "hats = s.get(\"velocity_hat\", [None] * len(params))",
             "hats = ([h.copy() for h in s[\"velocity_hat\"]] if self.amsgrad\n"
             "                else [None] * len(params))")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("weight_decay_without_lr", "weight decay shrinks w by w * weight_decay, "
           "not times the learning rate",
           [("cconv/optimizers/__init__.py", "p -= p * t(self.weight_decay) * t(lr)",
             "p -= p * t(self.weight_decay)")],
           ["tests/test_keras_optimizers.py", "tests/ops/test_optim.py"]),
    Mutant("adam_slots_grouped", "Adam's slots saved as all momentums, then all velocities "
           "(Keras interleaves them per weight)",
           [("cconv/optimizers/__init__.py", "[[\"momentum\", \"velocity\"]] + ",
             "[[\"momentum\"], [\"velocity\"]] + ")],
           ["tests/test_keras_optimizers.py", "tests/test_keras_interop.py",
            "tests/test_saving.py"]),
    # ---- the merge ops (Add, Subtract, Multiply, Average, Maximum, Concatenate) ----
    Mutant("merge_maximum_tie_to_last", "maximum: a tie goes to the last input holding the "
           "maximum, not the first (forward keeps the last zero's sign)",
           [("cconv/_kernels/_merge.pyx", "    return (v > m) | ((v != v) & (m == m))\n",
             "    return (v >= m) | ((v != v) & (m == m))\n")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    Mutant("merge_maximum_grad_to_all", "maximum's gradient goes to every input, not only "
           "the one holding the maximum",
           [("cconv/_kernels/_merge.pyx",
             "            outs[j][i] = g[i] if which[i - start] == jj else 0\n",
             "            outs[j][i] = g[i]\n")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    Mutant("merge_multiply_grad_own_input", "multiply's gradient wrt an input times that "
           "input, not the product of the inputs before it",
           [("cconv/_kernels/_merge.pyx", "            outs[j][i] = carry[i] * outs[j][i]\n",
             "            outs[j][i] = carry[i] * x[i]\n")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    Mutant("merge_average_grad_times_n", "average's gradient multiplied by the number of "
           "inputs, not divided by it",
           [("cconv/ops/merge.py", "share = np.divide(grad_out, ",
             "share = np.multiply(grad_out, ")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    Mutant("merge_subtract_grad_sign", "subtract's gradient wrt b is +grad_out, not -grad_out",
           [("cconv/ops/merge.py", "return [grad_out.copy(), np.negative(grad_out)]",
             "return [grad_out.copy(), grad_out.copy()]")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    Mutant("merge_concatenate_grad_offsets", "concatenate's gradient cut at offsets summed "
           "from the last input's size, not the first's",
           [("cconv/ops/merge.py", "cuts = np.cumsum([s[ax] for s in x_shapes])[:-1]",
             "cuts = np.cumsum([s[ax] for s in x_shapes][::-1])[:-1]")],
           ["tests/ops/test_merge.py", "tests/test_keras_merge.py"]),
    # ---- integration ----
    Mutant("fold_drops_strides", "a BatchNormalization folded into a strided Conv2D runs "
           "the convolution at stride 1",
           [("cconv/fusion.py",
             "            return ops.conv2d(x, kernel, bias, first.padding, strides=first.strides,\n"
             "                              dilation_rate=first.dilation_rate)\n",
             "            return ops.conv2d(x, kernel, bias, first.padding)\n")],
           ["tests/test_batchnorm_fold.py", "tests/test_keras_training_parity.py"]),
    Mutant("dropout_layer_rate_complement", "the standalone Dropout layer drops 1 - rate "
           "of its inputs (the same at rate 0.5)",
           [("cconv/layers.py", "ops.dropout(x, self.rate, seed=",
             "ops.dropout(x, 1 - self.rate, seed=")],
           ["tests/test_semantics.py::test_standalone_dropout_layer_trained_with_sgd",
            "tests/test_network_sgd.py"]),
    # ---- functional models (cconv.Model) ----
    Mutant("shared_layer_last_call_grads", "a layer called twice keeps the gradients of "
           "one call instead of their sum",
           [("cconv/model.py", "total[k] = g.copy() if k not in total else total[k] + g",
             "total[k] = g.copy()")],
           ["tests/test_functional.py::test_a_shared_layer_sums_the_gradients_of_its_calls",
            "tests/test_functional.py::test_loss_weights_and_a_shared_layer_train_as_in_keras"]),
    Mutant("graph_gradient_one_branch", "a tensor read by two layers gets the gradient of "
           "one reader only",
           [("cconv/model.py", "grads[slot] = g if slot not in grads else grads[slot] + g",
             "grads[slot] = g")],
           ["tests/test_functional.py::test_residual_forward_and_gradients_are_the_oracles_composition",
            "tests/test_functional.py::test_two_branch_training_follows_keras_for_ten_steps"]),
    Mutant("graph_frees_too_early", "inference drops a result one reader before its last",
           [("cconv/model.py", "                left[slot] -= 1\n                if not "
             "left[slot]:\n                    del values[slot]",
             "                left[slot] -= 1\n                if left[slot] <= 1 and slot "
             "not in self._output_slots:\n                    values[slot] = values[slot] * 0")],
           ["tests/test_functional.py::test_residual_forward_and_gradients_are_the_oracles_composition",
            "tests/test_functional.py::test_predictions_equal_keras_on_the_same_weights"]),
    Mutant("graph_layer_order_by_call", "a functional model's layers in the order their "
           "calls finish, not Keras's (depth, then first visit)",
           [("cconv/graph.py", "layers = sorted(layer_depth, key=lambda l: (-layer_depth[l], "
             "index[l]))", "layers = list(dict.fromkeys(n.layer for n in order))")],
           ["tests/test_functional.py::test_predictions_equal_keras_on_the_same_weights",
            "tests/test_functional.py::test_keras_files_cross_both_ways"]),
    Mutant("loss_weights_ignored", "compile's loss_weights weigh the logged loss but not "
           "the gradients",
           [("cconv/model.py", "                if lw != 1.0:\n                    factor = "
             "factor * lw\n", "")],
           ["tests/test_functional.py::test_two_branch_training_follows_keras_for_ten_steps",
            "tests/test_functional.py::test_loss_weights_and_a_shared_layer_train_as_in_keras"]),
    # ---- scikit-learn wrappers ----
    Mutant("wrapper_warm_start_ignored", "a wrapper with warm_start=False refits from the "
           "previous fit's model and weights",
           [("cconv/wrappers.py", "warm = bool(self.warm_start) and hasattr(self, \"model_\")",
             "warm = hasattr(self, \"model_\")")],
           ["tests/test_wrappers.py::test_warm_start_false_refits_from_scratch",
            "tests/test_wrappers.py::test_set_params_changes_the_next_fit_and_clones_are_unfitted",
            "tests/test_wrappers.py::test_scikit_learn_checks"]),
    Mutant("wrapper_warm_start_rebuilds", "a wrapper with warm_start=True builds a new model "
           "at every fit",
           [("cconv/wrappers.py", "        if warm:\n            return self.model_\n",
             "        if warm and False:\n            return self.model_\n")],
           ["tests/test_wrappers.py::test_warm_start_true_goes_on_from_the_previous_weights",
            "tests/test_wrappers.py::test_a_pickled_wrapper_predicts_and_trains_on_as_the_original"]),
    Mutant("wrapper_classes_first_seen", "classes_ in the order labels first appear, the "
           "model's columns in sorted order",
           [("cconv/wrappers.py", "return one_hot, indices, {\"classes_\": classes}",
             "return one_hot, indices, "
             "{\"classes_\": np.asarray(list(dict.fromkeys(y.tolist())))}")],
           ["tests/test_wrappers.py::test_predict_proba_rows_sum_to_one_and_agree_with_the_model",
            "tests/test_wrappers.py::test_grid_search_in_two_processes_scores_each_split_as_the_models_by_hand",
            "tests/test_wrappers.py::test_pipeline_of_scaler_transformer_and_classifier",
            "tests/test_wrappers.py::test_scikit_learn_checks"]),
    Mutant("wrapper_unseeded_build", "random_state seeds the fit but not the new model's "
           "weights",
           [("cconv/wrappers.py", "with utils._seeded(seed):", "with utils._seeded(None):")],
           ["tests/test_wrappers.py::test_warm_start_false_refits_from_scratch",
            "tests/test_wrappers.py::test_grid_search_in_two_processes_scores_each_split_as_the_models_by_hand",
            "tests/test_wrappers.py::test_scikit_learn_checks"]),
    Mutant("wrapper_fit_kwargs_dropped", "the wrapper's fit_kwargs never reach the model's "
           "fit (only fit's own keywords do)",
           [("cconv/wrappers.py", "options = {\"verbose\": 0, **(self.fit_kwargs or {}), **kwargs}",
             "options = {\"verbose\": 0, **kwargs}")],
           ["tests/test_wrappers.py::test_set_params_changes_the_next_fit_and_clones_are_unfitted",
            "tests/test_wrappers.py::test_grid_search_in_two_processes_scores_each_split_as_the_models_by_hand",
            "tests/test_wrappers.py::test_warm_start_true_goes_on_from_the_previous_weights"]),
    # ---- ONNX export ----
    Mutant("onnx_pool_odd_pad_first", "an ONNX pooling with 'same' padding puts the odd "
           "pixel of padding at the top and left (ONNX's SAME_LOWER), not the bottom and "
           "right as Keras",
           [("cconv/export.py",
             "                  pads=_pads(shape, layer.pool_size, layer.strides, (1, 1), "
             "layer.padding))\n",
             "                  pads=(lambda p: p[2:] + p[:2])(_pads(shape, layer.pool_size, "
             "layer.strides, (1, 1), layer.padding)))\n")],
           ["tests/test_onnx.py::test_each_layer_alone_runs_as_in_cconv",
            "tests/test_onnx.py::test_a_network_of_uneven_paddings_runs_as_in_cconv"]),
    Mutant("onnx_dense_kernel_transposed", "a Dense exported with its kernel transposed",
           [("cconv/export.py", 'kernel = g.const(layer.params["kernel"], ',
             'kernel = g.const(layer.params["kernel"].T, ')],
           ["tests/test_onnx.py::test_networks_run_in_onnxruntime_as_in_cconv",
            "tests/test_onnx.py::test_each_layer_alone_runs_as_in_cconv",
            "tests/test_onnx.py::test_export_graph_stores_a_shared_layer_once"]),
    Mutant("onnx_conv_kernel_rows_columns_swapped", "a Conv2D's kernel exported as (F, C, "
           "KW, KH): each filter transposed",
           [("cconv/export.py", "np.transpose(layer.params[\"kernel\"], (3, 2, 0, 1))",
             "np.transpose(layer.params[\"kernel\"], (3, 2, 1, 0))")],
           ["tests/test_onnx.py::test_networks_run_in_onnxruntime_as_in_cconv",
            "tests/test_onnx.py::test_each_layer_alone_runs_as_in_cconv",
            "tests/test_onnx.py::test_a_network_of_uneven_paddings_runs_as_in_cconv"]),
    Mutant("onnx_batchnorm_without_epsilon", "BatchNormalization exported as dividing by "
           "sqrt(moving_variance), without epsilon",
           [("cconv/export.py", 'astype(np.float64) + layer.epsilon)',
             'astype(np.float64))')],
           ["tests/test_onnx.py::test_each_layer_alone_runs_as_in_cconv",
            "tests/test_onnx.py::test_a_network_of_uneven_paddings_runs_as_in_cconv"]),
    Mutant("onnx_batch_fixed_at_one", "the exported input's batch axis fixed at 1, not "
           "dynamic",
           [("cconv/export.py", 'tensor, elem,\n'
             '                                                               ["batch", ',
             'tensor, elem,\n'
             '                                                               [1, ')],
           ["tests/test_onnx.py::test_networks_run_in_onnxruntime_as_in_cconv",
            "tests/test_onnx.py::test_each_layer_alone_runs_as_in_cconv",
            "tests/test_onnx.py::test_merge_rules_follow_keras"]),
    # ---- the benchmarks' FLOP count ----
    Mutant("flops_first_input_grad", "the FLOP count adds the input gradient of the first "
           "layers, which nothing needs",
           [("benchmarks/flops.py", "    trainable_before = False\n",
             "    trainable_before = True\n")],
           ["tests/test_flops.py::test_chapter10_epoch_is_the_published_5_04_gflop",
            "tests/test_flops.py::test_tf_tutorial_network_by_hand",
            "tests/test_flops.py::test_tiny_network_by_hand",
            "tests/test_flops.py::"
            "test_a_frozen_network_trains_for_the_cost_of_its_forward_pass"]),
    Mutant("flops_frozen_weight_grad", "the FLOP count adds a frozen layer's weight gradient",
           [("benchmarks/flops.py", "        trains = layer.trainable and any(",
             "        trains = any(")],
           ["tests/test_flops.py::test_tiny_network_by_hand",
            "tests/test_flops.py::"
            "test_a_frozen_network_trains_for_the_cost_of_its_forward_pass"]),
    Mutant("flops_dense_last_axis", "the FLOP count of a Dense on a rank-3 input counts one "
           "position, not all",
           [("benchmarks/flops.py", "    return int(np.prod(input_shape)) * units\n",
             "    return input_shape[-1] * units\n")],
           ["tests/test_flops.py::test_tiny_network_by_hand",
            "tests/test_flops.py::test_layer_counts_and_bad_shapes"]),
    # ---- progress ----
    Mutant("progress_not_live_in_kernel", "verbose='auto' takes a Jupyter kernel's output "
           "stream for a pipe: one line per epoch, no bar [MNIST]",
           [("cconv/callbacks.py",
             "    return iostream is not None and isinstance(stream, iostream.OutStream)\n",
             "    return False\n")],
           ["tests/test_progress.py", "tests/test_notebook.py"]),
    Mutant("progress_live_wherever_ipykernel", "verbose='auto' draws bars whenever ipykernel "
           "is loaded, into a captured cell or a redirected stdout too",
           [("cconv/callbacks.py",
             "    return iostream is not None and isinstance(stream, iostream.OutStream)\n",
             "    return iostream is not None\n")],
           ["tests/test_progress.py", "tests/test_notebook.py"]),
    Mutant("progress_no_evaluate_bar", "evaluate's bar is never drawn, only its last line "
           "[MNIST]",
           [("cconv/callbacks.py",
             "    def on_test_batch_end(self, batch, logs=None):\n        self._bar(batch, logs)\n",
             "    def on_test_batch_end(self, batch, logs=None):\n        pass\n")],
           ["tests/test_progress.py", "tests/test_notebook.py"]),
    Mutant("winograd3_output_row", "Winograd F(4x4, 3x3): a coefficient of A4^T's third row "
           "wrong (4 for 2 on the column of -1/2)",
           [("cconv/_kernels/_winograd.pyx.tp",
             "    r[2] = {{fma}}({{set1}}(2), x[4],",
             "    r[2] = {{fma}}({{set1}}(4), x[4],")],
           ["tests/ops/test_winograd.py", "tests/ops/test_fused.py",
            "tests/test_datasets_tf_cifar10_cnn.py"]),
    Mutant("winograd3_tile_stride", "Winograd F(4x4, 3x3): tiles stepped 2 apart, as for 5x5",
           [("cconv/_kernels/_winograd.pyx.tp",
             "    cdef Py_ssize_t ts = ALPHA + 1 - ksize  # output pixels per tile side\n",
             "    cdef Py_ssize_t ts = 2 if ksize == 5 else ALPHA + 1 - ksize - 2\n")],
           ["tests/ops/test_winograd.py", "tests/ops/test_fused.py",
            "tests/test_datasets_tf_cifar10_cnn.py"]),
    Mutant("gray_grad_bias_dropped", "single-channel weight gradient: the bias's sum skips "
           "every pixel (it rides beside the last tap)",
           [("cconv/_kernels/_conv_1ch.pyx.tp",
             "            acc_b = {{B}}_add(acc_b, gv)\n",
             "            acc_b = {{B}}_add(acc_b, {{B}}_zero())\n")],
           ["tests/ops/test_conv.py", "tests/test_gradcheck.py", "tests/test_network_sgd.py"]),
    Mutant("gray_row_activation_on_first_pixel", "single-channel conv: activations other "
           "than tanh applied to the row's first pixel only",
           [("cconv/_kernels/_conv_1ch.pyx.tp",
             "        activate(orow, OW * F, act)\n",
             "        activate(orow, F, act)\n")],
           ["tests/ops/test_conv.py", "tests/ops/test_fused.py", "tests/test_fusion.py"]),
    Mutant("fused_dense_group_span_of_first", "conv2d_dense: a group of strips dotted over "
           "its first strip's span, not the union of theirs",
           [("cconv/_kernels/_conv_1ch.pyx.tp",
             "                    lo = min(lo, j0[i])\n                    hi = max(hi, j1[i])\n",
             "                    lo = j0[live[a]]\n                    hi = j1[live[a]]\n")],
           ["tests/ops/test_fused.py", "tests/test_fusion.py"]),
    Mutant("dropout_keep_inverted", "dropout's branch-free select keeps the dropped elements",
           [("cconv/_kernels/_simd.pxd",
             "b &= (U)0 - (U)(m[i] != 0);",
             "b &= (U)0 - (U)(m[i] == 0);")],
           ["tests/ops/test_elementwise.py", "tests/ops/test_fused.py", "tests/test_fusion.py"]),
]


class MutantError(Exception):
    """A mutant that cannot be planted as written."""


def source_files():
    """The working tree as it is (tracked and untracked, minus ignored files) and the
    compiled kernels, relative to REPO."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout.decode().split("\0")
    files = [f for f in listed if f and (REPO / f).is_file()]
    files += [str(p.relative_to(REPO)) for p in (REPO / KERNELS).rglob("*.so")]
    return files


def copy_tree(dest):
    for rel in source_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)


def planted(mutant, read=lambda rel: (REPO / rel).read_text()):
    """{path: new text} with the mutant's substitutions applied; each must match once."""
    texts = {}
    for rel, old, new in mutant.edits:
        text = texts.get(rel)
        if text is None:
            text = read(rel)
        count = text.count(old)
        if count != 1:
            raise MutantError(f"{mutant.name}: {rel}: the text to replace occurs {count} times "
                              f"(expected once); update the mutant:\n{old}")
        texts[rel] = text.replace(old, new)
    return texts


def touches_kernels(mutant):
    return any(rel.startswith(KERNELS) for rel, _, _ in mutant.edits)


def level_in_use():
    """The kernel level the import picks on this CPU (the best one built)."""
    return subprocess.run([sys.executable, "-c", "import cconv; print(cconv.cpu_capability())"],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()


def run_pytest(copy, tests, env):
    """(return code, failing node ids, output) of pytest on `tests` in the copy."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rfE",
           *tests]
    run = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", run.stdout, re.M)
    return run.returncode, sorted(set(failed)), run.stdout + run.stderr


def test_env(copy, level=None):
    env = dict(os.environ, PYTHONPATH=str(copy))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("CCONV_OFFLINE", "1")
    if level:
        env["CCONV_CPU_CAPABILITY"] = level
    return env


def grouped(node_ids):
    """[(test function, number of its failing cases)]: parametrized cases counted once."""
    counts = {}
    for node in node_ids:
        function = node.split("[", 1)[0]
        counts[function] = counts.get(function, 0) + 1
    return sorted(counts.items())


Result = namedtuple("Result", "mutant killers status seconds")


def wait_while(path):
    while path and os.path.exists(path):
        time.sleep(15)


def run_mutant(mutant, workdir, quiet_file):
    """Plant `mutant` in a fresh copy, rebuild if it touches the kernels, run its tests."""
    wait_while(quiet_file)
    start = time.monotonic()
    copy = Path(tempfile.mkdtemp(prefix=f"mutant-{mutant.name}-", dir=workdir))
    try:
        copy_tree(copy)
        for rel, text in planted(mutant, lambda rel: (copy / rel).read_text()).items():
            (copy / rel).write_text(text)
        level = None
        if touches_kernels(mutant):
            level = level_in_use()
            build = subprocess.run(
                [sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=copy,
                env=dict(os.environ, CCONV_LEVELS=level), capture_output=True, text=True)
            if build.returncode:
                tail = (build.stdout + build.stderr)[-3000:]
                return Result(mutant, [], f"build failed:\n{tail}", time.monotonic() - start)
        code, failed, output = run_pytest(copy, mutant.tests, test_env(copy, level))
        if code not in (0, 1):
            status = f"pytest exited with {code}:\n{output[-3000:]}"
        else:
            status = "killed" if failed else "SURVIVED"
        return Result(mutant, failed, status, time.monotonic() - start)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def baseline(mutants, workdir):
    """The selected mutants' tests on an unmutated copy: (ok, message)."""
    tests = sorted({t for m in mutants for t in m.tests})
    copy = Path(tempfile.mkdtemp(prefix="mutant-baseline-", dir=workdir))
    try:
        copy_tree(copy)
        code, failed, output = run_pytest(copy, tests, test_env(copy))
        if code != 0:
            return False, (f"the tests fail without any mutant (exit {code}): "
                           f"{failed or output[-3000:]}")
        return True, output.strip().splitlines()[-1]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every substitution applies exactly once")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the tests on an unmutated copy first")
    parser.add_argument("--wait-while-exists", metavar="FILE",
                        help="before each run, wait while FILE exists (shared machines)")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "two mutants share a name"
    chosen = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"--only: unknown mutants {unknown}; --list shows them")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive int, got {args.jobs}")

    if args.list:
        for m in chosen:
            where = ", ".join(sorted({rel for rel, _, _ in m.edits}))
            print(f"{m.name:34s} {m.description}\n{'':34s} in {where}; tests: "
                  f"{' '.join(m.tests)}")
        return 0
    try:
        for m in chosen:
            planted(m)
    except MutantError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        print(f"all {len(chosen)} mutants apply")
        return 0

    with tempfile.TemporaryDirectory(prefix="cconv-mutants-") as workdir:
        if not args.no_baseline:
            wait_while(args.wait_while_exists)
            ok, message = baseline(chosen, workdir)
            print(f"baseline: {message}", flush=True)
            if not ok:
                return 2
        results = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_mutant, m, workdir, args.wait_while_exists)
                       for m in chosen]
            for future in concurrent.futures.as_completed(futures):
                r = future.result()
                results.append(r)
                print(f"{r.mutant.name}: {r.status.splitlines()[0]}, {len(r.killers)} "
                      f"failing tests, {r.seconds:.0f} s", flush=True)
    results.sort(key=lambda r: names.index(r.mutant.name))
    print("\nmutant -> tests that kill it")
    for r in results:
        print(f"\n{r.mutant.name} ({len(grouped(r.killers))} test functions, "
              f"{len(r.killers)} cases): {r.mutant.description}")
        if r.status not in ("killed", "SURVIVED"):
            print("  " + r.status.replace("\n", "\n  "))
        for function, cases in grouped(r.killers):
            print(f"  {function}" + (f" [{cases} cases]" if cases > 1 else ""))
        if r.status == "SURVIVED":
            print("  SURVIVED: no test failed")
    survivors = [r.mutant.name for r in results if r.status != "killed"]
    single = [r.mutant.name for r in results
              if r.status == "killed" and len(grouped(r.killers)) < 2]
    print(f"\n{len(results) - len(survivors)} of {len(results)} killed"
          + (f"; survived or broke: {', '.join(survivors)}" if survivors else "")
          + (f"; killed by one test only: {', '.join(single)}" if single else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
