"""scikit-learn estimators around cconv models, with the constructor and attributes of
Keras 3's keras.wrappers: SKLearnClassifier, SKLearnRegressor and SKLearnTransformer.

scikit-learn (>= 1.6) is an optional extra: pip install "cconv[sklearn]". `import cconv`
never imports this module, and nothing in cconv below it does.

`model` is a compiled cconv Sequential, or a callable `model(X=X, y=y, **model_kwargs)`
returning one. Each fit without warm start trains a new model: the callable's, or a copy
of the given model with fresh weights (as keras.models.clone_model makes them) compiled
as it was. With warm_start=True a fit goes on from the weights of the previous fit (the
first fit starts from a given model's own weights, on a copy: the parameter is never
trained in place).

random_state, which Keras's wrappers lack, is scikit-learn's: an int (or a numpy
RandomState drawn once per fit) seeds both the new model's weights and the fit's
shuffling and dropout, so that the same data give the same bits, as scikit-learn's
checks and searches expect. None leaves both to cconv's global seed
(cconv.utils.set_random_seed), as Keras's wrappers leave them to Keras's.

Fits and predictions are silent unless fit_kwargs (or fit's own keywords) say verbose=.
"""
import copy
import numbers

import numpy as np

try:
    from scipy.special import expit, softmax
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    raise ImportError(f"cconv.wrappers needs scikit-learn >= 1.6 (pip install "
                      f"'cconv[sklearn]'): {exc}") from exc

from cconv import models, saving, utils
from cconv.model import Sequential

# X as validate_data hands it on: any numeric dtype as it is (uint8 pixels stay uint8;
# the model casts), object arrays of numbers as float64; images keep their axes
_X_OPTIONS = dict(dtype="numeric", allow_nd=True)


class _SKLearnBase(BaseEstimator):
    """What the three share: the constructor, building or reusing the model, fit."""

    def __init__(self, model, warm_start=False, model_kwargs=None, fit_kwargs=None,
                 random_state=None):
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.random_state = random_state

    # ---- the target (regressor and transformer: y as it is, 2-D for the builder) ----
    _Y_OPTIONS = dict(multi_output=True, y_numeric=True)

    def _encode(self, y, warm):
        """(y for the model builder, y for model.fit, the attributes a successful fit
        sets)."""
        y2 = y.reshape(len(y), -1)
        return y2, y2, {"_y_1d": y.ndim == 1}

    def _decode(self, out):
        out = out.reshape(len(out), -1)
        return out[:, 0] if self._y_1d and out.shape[1] == 1 else out

    # ---- the model -------------------------------------------------------------------
    def _seed(self):
        """An int seeding this fit, or None (cconv's global seed decides)."""
        state = self.random_state
        if state is None:
            return None
        if isinstance(state, np.random.RandomState):
            return int(state.randint(np.iinfo(np.int32).max))
        if isinstance(state, numbers.Integral) and not isinstance(state, (bool, np.bool_)) \
                and state >= 0:
            return int(state)
        raise ValueError(f"random_state: expected None, a non-negative int or a "
                         f"numpy.random.RandomState, got {state!r}")

    def _new_model(self, X, y, warm):
        if warm:
            return self.model_
        if isinstance(self.model, Sequential):
            if self.warm_start:
                # the given weights, trained on a copy: a parameter is never changed
                model = copy.deepcopy(self.model)
            else:
                self._check_compiled(self.model)
                model = models.clone_model(self.model)
                saving.compile_from_config(model, saving.compile_config(self.model))
        elif callable(self.model):
            model = self.model(X=X, y=y, **(self.model_kwargs or {}))
            if not isinstance(model, Sequential):
                raise TypeError(f"model: the callable should return a compiled cconv "
                                f"Sequential, returned {type(model).__name__}")
        else:
            raise TypeError(f"model: expected a compiled cconv Sequential or a callable "
                            f"returning one, got {type(self.model).__name__}")
        self._check_compiled(model)
        if not model.built:  # drawn here, under this fit's seed
            model.build(X.shape[1:])
        return model

    @staticmethod
    def _check_compiled(model):
        if not model.compiled:
            raise ValueError(f"model: expected a compiled model (call model.compile("
                             f"optimizer=..., loss=...) before handing it over), got an "
                             f"uncompiled {model.name!r}")

    def _fit_target(self, model, given, y):
        return y

    # ---- scikit-learn's API ----------------------------------------------------------
    def fit(self, X, y, **kwargs):
        """Train; kwargs go to the model's fit (epochs, batch_size, sample_weight...)
        over fit_kwargs. With warm_start and a previous fit, the model goes on training
        and X must have the features it was fitted on."""
        warm = bool(self.warm_start) and hasattr(self, "model_")
        X, y = validate_data(self, X, y, reset=not warm, **_X_OPTIONS, **self._Y_OPTIONS)
        seed = self._seed()
        options = {"verbose": 0, **(self.fit_kwargs or {}), **kwargs}
        if seed is not None:
            if options.get("seed") is not None:
                raise ValueError(f"fit: seed={options['seed']!r} and random_state="
                                 f"{self.random_state!r} both seed the fit; give one")
            options["seed"] = seed
        given, target, learned = self._encode(y, warm)
        with utils._seeded(seed):
            model = self._new_model(X, given, warm)
        history = model.fit(X, self._fit_target(model, given, target), **options)
        # set together, once the fit went through
        self.model_, self.history_ = model, history.history
        for name, value in learned.items():
            setattr(self, name, value)
        return self

    def _output(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, **_X_OPTIONS)
        return self.model_.predict(X, verbose=0)


class SKLearnClassifier(ClassifierMixin, _SKLearnBase):
    """A classifier: y holds any labels (classes_ lists them sorted); the builder gets y
    one-hot, one column per class in classes_'s order, as Keras's wrapper gives it. The
    model ends in one unit per class (softmax), or in one unit (sigmoid) for two classes;
    the loss reads labels as it wants them (sparse, one-hot or 0/1)."""

    _Y_OPTIONS = {}

    def _encode(self, y, warm):
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"y: expected binary or multiclass labels, got {kind} targets")
        if warm:
            unknown = np.setdiff1d(y, self.classes_)
            if unknown.size:
                raise ValueError(f"y: labels {unknown.tolist()} are not among the classes "
                                 f"of the previous fit {self.classes_.tolist()} "
                                 f"(warm_start=True keeps them)")
            classes, indices = self.classes_, np.searchsorted(self.classes_, y)
        else:
            classes, indices = np.unique(y, return_inverse=True)
            if len(classes) < 2:
                raise ValueError(f"y: a classifier needs at least 2 classes, got one class "
                                 f"({classes[0]!r})")
        one_hot = np.eye(len(classes), dtype=np.float32)[indices]
        return one_hot, indices, {"classes_": classes}

    def _fit_target(self, model, one_hot, indices):
        k, shape = one_hot.shape[1], model.output_shape
        if shape == (1,) and k == 2 and model.loss.target != "sparse":
            return indices.astype(np.float32)
        if shape != (k,):
            raise ValueError(f"model: its output has shape {shape}; {k} classes need "
                             f"({k},), one unit per class"
                             + (", or (1,) with a sigmoid" if k == 2 else ""))
        return indices if model.loss.target == "sparse" else one_hot

    def _scores(self, X):
        """The model's outputs as (N, columns) float64, probabilities when the loss reads
        logits."""
        out = self._output(X).astype(np.float64)
        out = out.reshape(len(out), -1)
        if self.model_.loss.from_logits:
            out = expit(out) if out.shape[1] == 1 else softmax(out, axis=1)
        return out

    def predict(self, X):
        out = self._scores(X)
        picked = (out[:, 0] > 0.5).astype(np.intp) if out.shape[1] == 1 \
            else out.argmax(axis=1)
        return self.classes_[picked]

    def predict_proba(self, X):
        """(N, classes) probabilities in classes_'s order, from a softmax (or one sigmoid)
        output; each row is divided by its sum, in float64, so the model's float32
        rounding leaves sums of exactly 1."""
        p = self._scores(X)
        if p.shape[1] == 1:
            p = np.hstack([1 - p, p])
        sums = p.sum(axis=1)
        if (p < 0).any() or not np.allclose(sums, 1, atol=1e-3):
            raise ValueError("predict_proba: the model's outputs are not probabilities "
                             "(rows must be non-negative and sum to 1): end the model with "
                             "a softmax, or one sigmoid unit for two classes")
        return p / sums[:, None]


class SKLearnRegressor(RegressorMixin, _SKLearnBase):
    """A regressor: y of shape (N,) or (N, outputs); the builder gets y as (N, outputs),
    as Keras's wrapper gives it, and predict returns y's shape."""

    def predict(self, X):
        # float64, as scikit-learn's regressors give (exact: the model's float32 widened)
        return self._decode(self._output(X).astype(np.float64))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SKLearnTransformer(TransformerMixin, _SKLearnBase):
    """A transformer: trained on (X, y) as the regressor is; transform gives the model's
    output, one flat row per sample (an embedding, for the next step of a Pipeline)."""

    def transform(self, X):
        out = self._output(X)
        return out.reshape(len(out), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # the output is in the model's dtype (float32 by default), whatever X's was
        tags.transformer_tags.preserves_dtype = []
        return tags
