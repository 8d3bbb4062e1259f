"""Plain-NumPy twins of cconv.ops: same names, same signatures, written to be read.

The one difference: ops' `out` and `out_argmax` arguments, arrays to write into so that
callers can reuse memory, exist only on the fast path; here every function returns new
arrays. The test suite holds the compiled kernels to these. Nothing on the fast path
imports this module. Arguments are assumed valid; the checking lives in cconv.ops.
The activations are computed by cconv/activations.py's formulas, the table the kernels
are rendered from.
"""
import numpy as np

from cconv import activations


def _axis(size, k, stride, dilation, padding):
    """(windows, pad before, pad after) along one axis, as Keras on jax pads: 'same'
    keeps ceil(size / stride) windows, the odd padding pixel going after the image."""
    reach = dilation * (k - 1) + 1
    if padding == "valid":
        return (size - reach) // stride + 1, 0, 0
    windows = (size + stride - 1) // stride
    total = max(0, (windows - 1) * stride + reach - size)
    return windows, total // 2, total - total // 2


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _conv_geometry(x_shape, w_shape, padding, strides, dilation_rate):
    """((OH, top, bottom), (OW, left, right)), (SH, SW), (DH, DW)."""
    (sh, sw), (dh, dw) = _pair(strides), _pair(dilation_rate)
    rows = _axis(x_shape[1], w_shape[0], sh, dh, padding)
    cols = _axis(x_shape[2], w_shape[1], sw, dw, padding)
    return (rows, cols), (sh, sw), (dh, dw)


def _tap(ky, kx, oh, ow, strides, dilation):
    """The slice of the padded image that weight tap (ky, kx) sees, one pixel per output."""
    (sh, sw), (dh, dw) = strides, dilation
    return (slice(None), slice(ky * dh, ky * dh + (oh - 1) * sh + 1, sh),
            slice(kx * dw, kx * dw + (ow - 1) * sw + 1, sw), slice(None))


def conv2d(x, w, b=None, padding="valid", activation=None, strides=1, dilation_rate=1):
    """Every tap (ky, kx) of the weights sees a window of the (padded) image, every
    stride-th pixel from the tap's dilated offset; each window is a small dense layer
    from C channels to F filters, and the windows add up. Then the activation, if any."""
    kh, kw, _, f = w.shape
    ((oh, top, bottom), (ow, left, right)), st, dil = _conv_geometry(
        x.shape, w.shape, padding, strides, dilation_rate)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((x.shape[0], oh, ow, f), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out += xp[_tap(ky, kx, oh, ow, st, dil)] @ w[ky, kx]
    if b is not None:
        out += b
    return _activation(activation, out)


def conv2d_backward(x, w, grad_out, padding="valid", need_grad_x=True, strides=1,
                    dilation_rate=1):
    """Reverse each window's dense layer: its input gradient goes back to the window's
    pixels, its weight gradient is window.T @ grad_out summed over images and positions."""
    kh, kw, _, _ = w.shape
    ((oh, top, bottom), (ow, left, right)), st, dil = _conv_geometry(
        x.shape, w.shape, padding, strides, dilation_rate)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    grad_xp = np.zeros_like(xp)
    grad_w = np.zeros_like(w)
    for ky in range(kh):
        for kx in range(kw):
            tap = _tap(ky, kx, oh, ow, st, dil)
            grad_w[ky, kx] = np.einsum("nijc,nijf->cf", xp[tap], grad_out)
            grad_xp[tap] += grad_out @ w[ky, kx].T
    grad_b = grad_out.sum(axis=(0, 1, 2))
    grad_x = grad_xp[:, top:top + x.shape[1], left:left + x.shape[2], :] if need_grad_x else None
    return grad_x, grad_w, grad_b


def _exact(f, *arrays):
    """f of the arrays in long double (on x86-64, 11 bits more than float64), rounded
    to the first array's dtype."""
    return np.asarray(f(*(np.asarray(a, np.longdouble) for a in arrays))).astype(
        arrays[0].dtype)


def activation(name, x):
    """The activation `name` of x, by its formula in cconv/activations.py's table: None
    is the identity, softmax acts on the last axis."""
    return _exact(activations.row(name).forward, x)


def activation_backward(name, s, grad_out):
    """The gradient through the activation `name`: grad_out times its derivative at s,
    the activation's output or input as the table's gradient_from says."""
    row = activations.row(name)
    if row.name == "softmax":
        return softmax_backward(s, grad_out)
    return _exact(lambda g, a: g * row.derivative(a), grad_out, s)


def tanh(x):
    return activation("tanh", x)


def tanh_backward(y, grad_out):
    return activation_backward("tanh", y, grad_out)


def relu(x):
    return activation("relu", x)


def relu_backward(y, grad_out):
    return activation_backward("relu", y, grad_out)


def _last(x, axis):
    """x with the softmax axes moved to the end and merged into one, and how to undo it."""
    axes = sorted({a % x.ndim for a in (axis if isinstance(axis, (tuple, list)) else [axis])})
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = x.transpose(rest + axes)
    flat = moved.reshape(moved.shape[:len(rest)] + (-1,))
    return flat, lambda f: f.reshape(moved.shape).transpose(np.argsort(rest + axes))


def softmax(x, axis=-1):
    flat, back = _last(x, axis)
    return back(activation("softmax", flat))


def softmax_backward(y, grad_out, axis=-1):
    y_flat, back = _last(y, axis)
    g_flat, _ = _last(grad_out, axis)
    return back(y_flat * (g_flat - (g_flat * y_flat).sum(axis=-1, keepdims=True)))


def log_softmax(x):
    return _exact(lambda a: np.log(activations.row("softmax").forward(a)), x)


_activation = activation  # for functions whose argument `activation` hides it


def relu_general(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras's relu with options, as its formula reads: the capped x above the
    threshold, the negative slope's line below."""
    cap = np.inf if max_value is None else max_value
    return np.where(x > threshold, np.minimum(x, cap),
                    negative_slope * (x - threshold) + 0.0).astype(x.dtype)


def relu_general_backward(x, grad_out, negative_slope=0.0, max_value=None, threshold=0.0):
    cap = np.inf if max_value is None else max_value
    slope = np.where(x > threshold, (x < cap) * 1.0, negative_slope)
    return (grad_out * slope).astype(x.dtype)


def elu(x, alpha=1.0):
    return _exact(lambda a: np.where(a > 0, a, alpha * np.expm1(np.minimum(a, 0))), x)


def elu_backward(x, grad_out, alpha=1.0):
    return _exact(lambda g, a: g * np.where(a > 0, 1, alpha * np.exp(np.minimum(a, 0))),
                  grad_out, x)


_MASK64 = (1 << 64) - 1


def _mix64(z):
    """SplitMix64's finaliser on uint64 arrays (arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _mix32(z):
    """The kernels' 32-bit finaliser on uint32 arrays (arithmetic wraps modulo 2**32)."""
    z = (z ^ (z >> np.uint32(16))) * np.uint32(0x7FEB352D)
    z = (z ^ (z >> np.uint32(15))) * np.uint32(0x846CA68B)
    return z ^ (z >> np.uint32(16))


def dropout_mask(shape, rate, seed):
    """Element i (C order) is kept when a 32-bit hash of (seed, i), read as a number in
    [0, 1), is at least `rate`. The hash: a 64-bit key from the seed and i's high 32
    bits, whose halves k0, k1 scramble i's low 32 bits."""
    with np.errstate(over="ignore"):
        base = _mix64(np.array([seed], dtype=np.uint64))[0]
        counters = np.arange(int(np.prod(shape)), dtype=np.uint64)
        keys = _mix64(base + (counters >> np.uint64(32)) * np.uint64(0xD1B54A32D192ED03))
        k0 = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        k1 = (keys >> np.uint64(32)).astype(np.uint32)
        low = (counters & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        draws = _mix32(low * np.uint32(0x9E3779B9) + k0) ^ k1
    uniform = draws.astype(np.float64) * 2.0**-32
    return (uniform >= rate).astype(np.uint8).reshape(shape)


def dropout(x, rate, seed=None, mask=None):
    if mask is None:
        mask = dropout_mask(x.shape, rate, seed)
    scale = x.dtype.type(1.0 / (1.0 - rate))
    return np.where(mask == 1, x * scale, 0).astype(x.dtype), mask


def dropout_backward(grad_out, mask, rate):
    scale = grad_out.dtype.type(1.0 / (1.0 - rate))
    return np.where(mask == 1, grad_out * scale, 0).astype(grad_out.dtype)


def dense(x, w, b=None):
    out = np.einsum("nd,du->nu", x, w)
    return out + b if b is not None else out


def dense_backward(x, w, grad_out, need_grad_x=True):
    grad_x = np.einsum("nu,du->nd", grad_out, w) if need_grad_x else None
    return grad_x, np.einsum("nd,nu->du", x, grad_out), grad_out.sum(axis=0)


def dense_backward_gated(grad_out, w, y, mask=None, rate=0.0, activation=None):
    """Back through the dense layer, the dropout, then the activation, one by one."""
    grad = dense_backward(y, w, grad_out)[0]
    if mask is not None:
        grad = dropout_backward(grad, mask, rate)
    return activation_backward(activation, y, grad)


def conv2d_dense(x, w, b, dense_w, dense_b, padding="valid", activation=None):
    """The conv layer, its activation, flatten, then the dense layer, one after another."""
    h = conv2d(x, w, b, padding, activation)
    return dense(h.reshape(len(h), -1), dense_w, dense_b)


def _pool_geometry(x_shape, pool_size, padding, strides=None):
    """Per output row and column, the clipped [start, stop) of its window in the image.
    strides default to the pool size, as in Keras."""
    _, h, w, _ = x_shape
    ph, pw = _pair(pool_size)
    sh, sw = (ph, pw) if strides is None else _pair(strides)
    (oh, top, _), (ow, left, _) = _axis(h, ph, sh, 1, padding), _axis(w, pw, sw, 1, padding)
    rows = [(max(i * sh - top, 0), min(i * sh - top + ph, h)) for i in range(oh)]
    cols = [(max(j * sw - left, 0), min(j * sw - left + pw, w)) for j in range(ow)]
    return rows, cols


def max_pool2d(x, pool_size, padding="valid", need_argmax=True, strides=None):
    """Window by window: the max over the window's pixels for every image and channel, and
    where it was, as a flat index (row * W + col) * C + channel into the image."""
    n, h, w, c = x.shape
    rows, cols = _pool_geometry(x.shape, pool_size, padding, strides)
    y = np.empty((n, len(rows), len(cols), c), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int32)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            window = x[:, r0:r1, c0:c1, :].reshape(n, (r1 - r0) * (c1 - c0), c)
            best = window.argmax(axis=1)  # first maximum in row-major order
            y[:, i, j, :] = np.take_along_axis(window, best[:, None, :], axis=1)[:, 0, :]
            row, col = r0 + best // (c1 - c0), c0 + best % (c1 - c0)
            argmax[:, i, j, :] = (row * w + col) * c + np.arange(c)
    return y, (argmax if need_argmax else None)


def max_pool2d_backward(grad_out, argmax, x_shape, pool_size, padding="valid", strides=None):
    """Each pooled gradient lands on the pixel that won its window (overlapping windows
    that share a winner add up there); the rest get 0."""
    n = x_shape[0]
    grad_x = np.zeros((n, int(np.prod(x_shape[1:]))), dtype=grad_out.dtype)
    per_image = int(np.prod(grad_out.shape[1:]))  # (not -1: N may be 0)
    images = np.repeat(np.arange(n), per_image)
    np.add.at(grad_x, (images, argmax.reshape(-1).astype(np.intp)), grad_out.reshape(-1))
    return grad_x.reshape(x_shape)


def avg_pool2d(x, pool_size, padding="valid", strides=None):
    """Window by window: the mean of the window's pixels inside the image (padding is
    not counted, as in Keras)."""
    n, h, w, c = x.shape
    rows, cols = _pool_geometry(x.shape, pool_size, padding, strides)
    y = np.empty((n, len(rows), len(cols), c), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            y[:, i, j, :] = x[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return y


def avg_pool2d_backward(grad_out, x_shape, pool_size, padding="valid", strides=None):
    """Each window's gradient, divided by its pixel count, goes to each of its pixels."""
    rows, cols = _pool_geometry(x_shape, pool_size, padding, strides)
    grad_x = np.zeros(x_shape, dtype=grad_out.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            share = grad_out[:, i, j, :] / grad_out.dtype.type((r1 - r0) * (c1 - c0))
            grad_x[:, r0:r1, c0:c1, :] += share[:, None, None, :]
    return grad_x


def kernel_pool(x, mode="max"):
    """At each position, combine the kernels' outputs (last axis) into one value."""
    reduce = {"max": np.max, "mean": np.mean, "sum": np.sum}[mode]
    return reduce(x, axis=-1, keepdims=True).astype(x.dtype)


def kernel_pool_backward(x, grad_out, mode="max"):
    f = x.shape[-1]
    if mode == "sum":
        return np.broadcast_to(grad_out, x.shape).astype(x.dtype)
    if mode == "mean":
        return np.broadcast_to(grad_out / x.dtype.type(f), x.shape).astype(x.dtype)
    winner = np.eye(f, dtype=x.dtype)[x.argmax(axis=-1)]  # first maximum only
    return winner * grad_out


def adam_update(param, grad, m, v, step, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                epsilon=1e-7, amsgrad=False, v_hat=None):
    """Keras's Adam, in place: bias corrections folded into the step size alpha (in
    float64, then rounded to param's dtype as Keras's float32 variables take it);
    amsgrad keeps v_hat, the largest v so far, in v's place."""
    alpha = param.dtype.type(learning_rate * np.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step))
    m += (grad - m) * (1 - beta_1)
    v += (grad * grad - v) * (1 - beta_2)
    if amsgrad:
        np.maximum(v_hat, v, out=v_hat)
        v = v_hat
    param -= (alpha * m / (np.sqrt(v) + epsilon)).astype(param.dtype)


def sgd_update(param, grad, momentums=None, learning_rate=0.01, momentum=0.0,
               nesterov=False):
    """Keras's SGD, in place."""
    step = grad * learning_rate
    if momentums is None:
        param -= step
        return
    momentums[...] = momentums * momentum - step
    param += momentums * momentum - step if nesterov else momentums


def rmsprop_update(param, grad, velocity, momentums=None, average_gradient=None,
                   learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                   centered=False):
    """Keras's RMSprop, in place."""
    velocity[...] = rho * velocity + (1 - rho) * (grad * grad)
    if centered:
        average_gradient[...] = rho * average_gradient + (1 - rho) * grad
        denominator = velocity - average_gradient * average_gradient + epsilon
    else:
        denominator = velocity + epsilon
    step = learning_rate * grad / np.sqrt(denominator)
    if momentums is not None:
        momentums[...] = momentum * momentums + step
        step = momentums
    param -= step


def conv2d_maxpool(x, w, b=None, padding="valid", activation=None, pool_size=2,
                   pool_padding="valid", need_argmax=False):
    """The three steps one after the other: convolve, activate, pool."""
    h = conv2d(x, w, b, padding, activation)
    y, argmax = max_pool2d(h, pool_size, pool_padding)
    return y, (argmax if need_argmax else None)


def legacy_coin_flips(shape, random_state=None):
    """np.random's own draws, as uint8."""
    draw = np.random.randint if random_state is None else random_state.randint
    return draw(2, size=shape).astype(np.uint8)


def rescale(x, scale, offset=0.0):
    """x * scale + offset, with scale and offset rounded to x's dtype first, element by
    element (Keras casts both to the layer's dtype)."""
    out = np.empty(np.shape(x), dtype=x.dtype)
    s = np.broadcast_to(np.asarray(scale, dtype=x.dtype), x.shape)
    o = np.broadcast_to(np.asarray(offset, dtype=x.dtype), x.shape)
    for i in np.ndindex(x.shape):
        out[i] = x[i] * s[i] + o[i]  # two roundings in x's dtype, as numpy scalars do
    return out


def rescale_backward(grad_out, scale):
    return grad_out * np.asarray(scale, dtype=grad_out.dtype)


def _sides(padding):
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def zero_pad2d(x, padding):
    """np.pad with zeros on the two image axes."""
    rows, cols = _sides(padding)
    return np.pad(x, ((0, 0), rows, cols, (0, 0)))


def zero_pad2d_backward(grad_out, x_shape, padding):
    """Row by row: image row i is padded row top + i, from column left on."""
    (top, _), (left, _) = _sides(padding)
    n, h, w, c = x_shape
    grad_x = np.empty(x_shape, dtype=grad_out.dtype)
    for i in range(h):
        grad_x[:, i] = grad_out[:, top + i, left:left + w]
    return grad_x


def global_avg_pool2d(x):
    """Pixel by pixel, summed in float64, divided by the pixel count."""
    n, h, w, c = x.shape
    total = np.zeros((n, c))
    for i in range(h):
        for j in range(w):
            total += x[:, i, j, :]
    return (total / (h * w)).astype(x.dtype)


def global_avg_pool2d_backward(grad_out, x_shape):
    n, h, w, c = x_shape
    grad_x = np.empty(x_shape, dtype=grad_out.dtype)
    for i in range(h):
        for j in range(w):
            grad_x[:, i, j, :] = grad_out / h / w
    return grad_x


def global_max_pool2d(x, need_argmax=True):
    """Pixels in row-major order; a later pixel takes over only when strictly larger (a tie
    stays with the first)."""
    n, h, w, c = x.shape
    best = x[:, 0, 0, :].copy()
    argmax = np.zeros((n, c), dtype=np.int64)
    for i in range(h):
        for j in range(w):
            larger = x[:, i, j, :] > best
            best[larger] = x[:, i, j, :][larger]
            argmax[larger] = i * w + j
    return best, (argmax if need_argmax else None)


def global_max_pool2d_backward(grad_out, argmax, x_shape):
    n, h, w, c = x_shape
    grad_x = np.zeros(x_shape, dtype=grad_out.dtype)
    for b in range(n):
        for ch in range(c):
            i, j = divmod(int(argmax[b, ch]), w)
            grad_x[b, i, j, ch] = grad_out[b, ch]
    return grad_x


def _bn_rows(x):
    return x.reshape(-1, x.shape[-1]).astype(np.float64)


def _bn_output(x, mean, var, gamma, beta, epsilon):
    c = x.shape[-1]
    gamma = np.ones(c) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros(c) if beta is None else np.asarray(beta, dtype=np.float64)
    xhat = (x.astype(np.float64) - mean) / np.sqrt(var + epsilon)
    return (xhat * gamma + beta).astype(x.dtype)


def batch_norm(x, gamma=None, beta=None, epsilon=1e-3):
    """Normalise each channel of the last axis by the batch's mean and biased variance
    (over every other axis), in float64; returns (y, mean, var)."""
    rows = _bn_rows(x)
    mean = rows.mean(axis=0)
    var = ((rows - mean) ** 2).mean(axis=0)
    return _bn_output(x, mean, var, gamma, beta, epsilon), mean, var


def batch_norm_inference(x, mean, var, gamma=None, beta=None, epsilon=1e-3):
    """The same with given statistics (the moving ones)."""
    return _bn_output(x, np.asarray(mean, dtype=np.float64),
                      np.asarray(var, dtype=np.float64), gamma, beta, epsilon)


def batch_norm_backward(x, grad_out, mean, var, gamma=None, epsilon=1e-3, need_grad_x=True,
                        batch_statistics=True):
    """The chain rule through the batch's mean and variance, written out term by term
    rather than in the ops' closed form: y = gamma * xhat + beta, xhat = (x - mean) * s,
    s = (var + epsilon) ** -0.5, and mean and var depend on every row (constants when
    not batch_statistics: batch_norm_inference's gradients)."""
    rows, g = _bn_rows(x), _bn_rows(grad_out)
    m = len(rows)
    gamma = np.ones(rows.shape[1]) if gamma is None else np.asarray(gamma, np.float64)
    s = (np.asarray(var, np.float64) + epsilon) ** -0.5
    d = rows - mean
    grad_xhat = g * gamma
    grad_var = (grad_xhat * d).sum(axis=0) * -0.5 * s ** 3
    grad_mean = -(grad_xhat * s).sum(axis=0) - grad_var * 2.0 * d.sum(axis=0) / m
    grad_x = grad_xhat * s
    if batch_statistics:
        grad_x = grad_x + grad_var * 2.0 * d / m + grad_mean / m
    grad_gamma = (g * d * s).sum(axis=0)
    grad_beta = g.sum(axis=0)
    return (grad_x.reshape(x.shape).astype(x.dtype) if need_grad_x else None,
            grad_gamma.astype(x.dtype), grad_beta.astype(x.dtype))


# ---- merges: lists of inputs of one shape, folded left to right as Keras does ----------
def add(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out.copy() if out is xs[0] else out


def subtract(a, b):
    return a - b


def multiply(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out.copy() if out is xs[0] else out


def average(xs):
    return add(xs) / xs[0].dtype.type(len(xs))


def _first_max(xs):
    """Which input holds each element's maximum: the first one on a tie, the first NaN
    where there is one (np.argmax's rule)."""
    return np.argmax(np.stack(xs), axis=0)


def maximum(xs):
    return np.take_along_axis(np.stack(xs), _first_max(xs)[None], axis=0)[0]


def add_backward(grad_out, n):
    return [grad_out.copy() for _ in range(n)]


def subtract_backward(grad_out):
    return [grad_out.copy(), -grad_out]


def average_backward(grad_out, n):
    return [grad_out / grad_out.dtype.type(n) for _ in range(n)]


def multiply_backward(xs, grad_out):
    """Reverse mode through p1 = x0 * x1, p2 = p1 * x2, ...: x_j's gradient is the
    gradient reaching p_j (grad_out, times the inputs after x_j, from the last back)
    times p_{j-1}, the product of the inputs before it."""
    before = [None, xs[0]]
    for x in xs[1:-1]:
        before.append(before[-1] * x)
    grads = [None] * len(xs)
    carried = grad_out
    for j in range(len(xs) - 1, 0, -1):
        grads[j] = carried * before[j]
        carried = carried * xs[j]
    grads[0] = carried.copy() if carried is grad_out else carried
    return grads


def maximum_backward(xs, grad_out):
    which = _first_max(xs)
    return [np.where(which == j, grad_out, grad_out.dtype.type(0)) for j in range(len(xs))]


def concatenate(xs, axis=-1):
    return np.concatenate(xs, axis=axis)


def concatenate_backward(grad_out, x_shapes, axis=-1):
    ends = np.cumsum([shape[axis] for shape in x_shapes])
    index = [slice(None)] * grad_out.ndim
    grads = []
    for start, end in zip([0, *ends[:-1]], ends):
        index[axis] = slice(start, end)
        grads.append(grad_out[tuple(index)].copy())
    return grads
