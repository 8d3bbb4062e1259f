"""cconv.wrappers: scikit-learn's own estimator checks on the three wrappers, with no
expected failures; and what users do with them (clone and set_params, pickles,
GridSearchCV over two processes, Pipeline, predict_proba, warm starts). Every fit is
compared with a cconv model built and trained by hand the same way (set_random_seed,
then fit(seed=...)), never with the wrapper's own output. Needs scikit-learn
(pip install ".[sklearn]") and, for the checks' DataFrame cases, pandas (".[test]")."""
import copy
import pickle

import numpy as np
import pytest

import cconv
from cconv.layers import Dense
from zoo import need, same_bits

need("sklearn", "sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from cconv.wrappers import (SKLearnClassifier, SKLearnRegressor,  # noqa: E402
                            SKLearnTransformer)


def mlp(X, y, loss="categorical_crossentropy", hidden=(8,), activation="softmax",
        learning_rate=0.01):
    """A small MLP sized by the data, as Keras's wrapper tests build theirs; at module
    level so that GridSearchCV's worker processes can unpickle it."""
    model = cconv.Sequential([cconv.Input(X.shape[1:])]
                             + [Dense(units, activation="relu") for units in hidden]
                             + [Dense(y.shape[1], activation=activation)])
    model.compile(optimizer=cconv.optimizers.Adam(learning_rate), loss=loss)
    return model


class NamedMLP:
    """mlp, printed as "mlp": scikit-learn's check ids print the parameters, and a
    function prints its address, which would change the ids from run to run."""

    def __call__(self, X, y, **kwargs):
        return mlp(X, y, **kwargs)

    def __repr__(self):
        return "mlp"


def classifier(**options):
    return SKLearnClassifier(**{"model": mlp, "fit_kwargs": {"epochs": 20}, **options})


# The estimators scikit-learn checks: its own data and thresholds (accuracy above 0.83,
# R^2 above 0.5) decide the epochs. random_state stays None: the checks that need the
# same fit twice set it, as they do for scikit-learn's estimators.
CHECKED = [
    classifier(model=NamedMLP()),
    SKLearnRegressor(NamedMLP(), model_kwargs={"loss": "mse", "activation": None},
                     fit_kwargs={"epochs": 20}),
    SKLearnTransformer(NamedMLP(), model_kwargs={"loss": "mse", "activation": None},
                       fit_kwargs={"epochs": 5}),
]


@parametrize_with_checks(CHECKED)
def test_scikit_learn_checks(estimator, check, monkeypatch):
    # Without it the array-API check (NumPy inputs with scikit-learn's array-API
    # dispatch on; cconv does not claim more) would skip.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


# ---- by hand: what each wrapper should have done ------------------------------------
def blobs(n=90, labels=("cat", "ant", "bee"), seed=0):
    """Three separable groups, labelled by strings in neither sorted nor first-seen
    order of their group numbers."""
    X, group = make_blobs(n_samples=n, centers=len(labels), n_features=4, random_state=seed)
    return StandardScaler().fit_transform(X), np.asarray(labels)[group]


def one_hot(y):
    classes, indices = np.unique(y, return_inverse=True)
    return classes, np.eye(len(classes), dtype=np.float32)[indices]


def by_hand(X, target, seed, epochs, fits=1, builder=mlp, **model_kwargs):
    """The model a wrapper with random_state=seed should train: built after
    set_random_seed(seed), each fit with seed=seed."""
    cconv.utils.set_random_seed(seed)
    model = builder(X, target, **model_kwargs)
    for _ in range(fits):
        model.fit(X, target, epochs=epochs, seed=seed, verbose=0)
    return model


def probabilities(model, X):
    p = model.predict(X, verbose=0).astype(np.float64)
    return p / p.sum(axis=1, keepdims=True)


# ---- classes and probabilities -------------------------------------------------------
def test_predict_proba_rows_sum_to_one_and_agree_with_the_model():
    X, y = blobs()
    est = classifier(random_state=3).fit(X, y)
    classes, target = one_hot(y)
    model = by_hand(X, target, 3, 20)
    assert est.classes_.tolist() == ["ant", "bee", "cat"] == classes.tolist()
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba, model.predict(X, verbose=0), rtol=1e-6, atol=1e-7)
    want = classes[model.predict(X, verbose=0).argmax(axis=1)]
    assert (est.predict(X) == want).all()
    assert (want == y).mean() > 0.9  # the comparison has something to compare


def test_one_sigmoid_unit_gives_both_columns_of_two_classes():
    X, y = blobs(labels=("yes", "no"))
    est = classifier(random_state=1, model_kwargs={"loss": "binary_crossentropy",
                                                   "activation": "sigmoid"})

    def one_unit(X, y, **kwargs):
        return mlp(X, y[:, 1:], **kwargs)

    est.set_params(model=one_unit).fit(X, y)
    # the sigmoid's unit is the second class, "yes" (classes_ is sorted)
    model = by_hand(X, (y == "yes").astype(np.float32)[:, None], 1, 20,
                    loss="binary_crossentropy", activation="sigmoid")
    p_yes = model.predict(X, verbose=0)[:, 0].astype(np.float64)
    np.testing.assert_array_equal(est.predict_proba(X), np.column_stack([1 - p_yes, p_yes]))
    assert (est.predict(X) == np.where(p_yes > 0.5, "yes", "no")).all()
    assert (est.predict(X) == y).mean() > 0.9


def test_sparse_labels_and_logits_as_the_loss_reads_them():
    X, y = blobs()
    loss = cconv.losses.SparseCategoricalCrossentropy(from_logits=True)
    est = classifier(random_state=2, model_kwargs={"loss": loss, "activation": None})
    est.fit(X, y)
    classes, indices = np.unique(y, return_inverse=True)
    cconv.utils.set_random_seed(2)
    model = mlp(X, np.eye(3), loss=loss, activation=None)
    model.fit(X, indices, epochs=20, seed=2, verbose=0)
    logits = model.predict(X, verbose=0).astype(np.float64)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(est.predict_proba(X), softmax / softmax.sum(axis=1, keepdims=True),
                               rtol=1e-12)
    assert (est.predict(X) == classes[logits.argmax(axis=1)]).all()


# ---- the regressor and the transformer ----------------------------------------------
def test_regressor_and_transformer_give_the_model_outputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y2 = np.column_stack([X[:, 0] - X[:, 1], X[:, 2]])
    kwargs = {"loss": "mse", "activation": None}
    for y in (y2[:, 0], y2):
        reg = SKLearnRegressor(mlp, model_kwargs=kwargs, fit_kwargs={"epochs": 5},
                               random_state=4).fit(X, y)
        model = by_hand(X, y.reshape(len(y), -1), 4, 5, **kwargs)
        out = model.predict(X, verbose=0).astype(np.float64)
        pred = reg.predict(X)
        assert pred.shape == y.shape and pred.dtype == np.float64
        np.testing.assert_array_equal(pred, out.reshape(y.shape))
    trans = SKLearnTransformer(mlp, model_kwargs=kwargs, fit_kwargs={"epochs": 5},
                               random_state=4).fit(X, y2)
    assert same_bits([trans.transform(X)], [model.predict(X, verbose=0)])
    assert trans.n_features_in_ == 5 and len(trans.history_["loss"]) == 5


# ---- clone, set_params, pickles -----------------------------------------------------
def test_set_params_changes_the_next_fit_and_clones_are_unfitted():
    X, y = blobs()
    est = classifier(random_state=0).fit(X, y)
    twin = clone(est)
    assert not hasattr(twin, "model_") and twin.get_params() == est.get_params()
    est.set_params(model_kwargs={"hidden": (5, 3)}, fit_kwargs={"epochs": 3}).fit(X, y)
    assert [layer.units for layer in est.model_.layers] == [5, 3, 3]
    assert len(est.history_["loss"]) == 3
    classes, target = one_hot(y)
    model = by_hand(X, target, 0, 3, hidden=(5, 3))
    assert same_bits(est.model_.get_weights(), model.get_weights())
    # the clone kept the parameters it was given
    assert twin.get_params()["fit_kwargs"] == {"epochs": 20}


def test_a_pickled_wrapper_predicts_and_trains_on_as_the_original():
    X, y = blobs()
    est = classifier(random_state=5, warm_start=True).fit(X, y)
    copy_ = pickle.loads(pickle.dumps(est))
    assert same_bits([copy_.predict_proba(X)], [est.predict_proba(X)])
    assert (copy_.classes_ == est.classes_).all() and copy_.n_features_in_ == 4
    # a warm start goes on from the pickled weights and optimizer state
    copy_.fit(X, y)
    classes, target = one_hot(y)
    model = by_hand(X, target, 5, 20, fits=2)
    assert same_bits(copy_.model_.get_weights(), model.get_weights())


# ---- warm starts -----------------------------------------------------------------------
def test_warm_start_true_goes_on_from_the_previous_weights():
    X, y = blobs()
    classes, target = one_hot(y)
    est = classifier(random_state=6, warm_start=True, fit_kwargs={"epochs": 4})
    est.fit(X, y)
    first = est.model_
    est.fit(X, y)
    assert est.model_ is first and len(est.history_["loss"]) == 4
    assert same_bits(est.model_.get_weights(), by_hand(X, target, 6, 4, fits=2).get_weights())
    assert not same_bits(est.model_.get_weights(), by_hand(X, target, 6, 4).get_weights())
    # labels the first fit did not see cannot join later
    with pytest.raises(ValueError, match=r"y: labels \['dog'\] are not among"):
        est.fit(X[:3], np.array(["ant", "dog", "cat"]))


def test_warm_start_false_refits_from_scratch():
    X, y = blobs()
    classes, target = one_hot(y)
    est = classifier(random_state=6, fit_kwargs={"epochs": 4})
    est.fit(X, y)
    first = est.model_
    est.fit(X, y)
    assert est.model_ is not first
    assert same_bits(est.model_.get_weights(), by_hand(X, target, 6, 4).get_weights())
    assert not same_bits(est.model_.get_weights(),
                         by_hand(X, target, 6, 4, fits=2).get_weights())


def test_a_given_model_is_copied_never_trained_in_place():
    X, y = blobs()
    classes, target = one_hot(y)
    cconv.utils.set_random_seed(11)
    given = mlp(X, target, hidden=(6,))
    given.fit(X, target, epochs=2, seed=1, verbose=0)  # weights a clone does not have
    before = given.get_weights()
    # warm_start=False: Keras's clone_model (fresh weights, under random_state), compiled
    # as the given model was
    est = SKLearnClassifier(given, fit_kwargs={"epochs": 3}, random_state=8).fit(X, y)
    cconv.utils.set_random_seed(8)
    fresh = cconv.models.clone_model(given)
    fresh.compile(optimizer=cconv.optimizers.Adam(0.01), loss="categorical_crossentropy")
    fresh.fit(X, target, epochs=3, seed=8, verbose=0)
    assert same_bits(est.model_.get_weights(), fresh.get_weights())
    # warm_start=True: the first fit starts from the given weights and optimizer state
    warm = SKLearnClassifier(given, warm_start=True, fit_kwargs={"epochs": 3},
                             random_state=8).fit(X, y)
    tuned = copy.deepcopy(given)
    tuned.fit(X, target, epochs=3, seed=8, verbose=0)
    assert same_bits(warm.model_.get_weights(), tuned.get_weights())
    assert same_bits(given.get_weights(), before)


def test_a_fit_with_random_state_leaves_the_global_seed_alone():
    X, y = blobs()
    cconv.utils.set_random_seed(21)
    classifier(random_state=0).fit(X, y)
    after = mlp(X, one_hot(y)[1]).get_weights()
    cconv.utils.set_random_seed(21)
    assert same_bits(after, mlp(X, one_hot(y)[1]).get_weights())


# ---- in scikit-learn's machinery -----------------------------------------------------
def test_grid_search_in_two_processes_scores_each_split_as_the_models_by_hand():
    X, y = blobs(n=60)
    grid = {"model_kwargs": [{"hidden": (4,)}, {"hidden": (8,)}],
            "fit_kwargs": [{"epochs": 1}, {"epochs": 6}]}
    search = GridSearchCV(SKLearnClassifier(mlp, random_state=9), grid, cv=2, n_jobs=2)
    search.fit(X, y)
    splits = list(StratifiedKFold(2).split(X, y))
    for i, params in enumerate(search.cv_results_["params"]):
        for k, (train, test) in enumerate(splits):
            classes, target = one_hot(y[train])
            model = by_hand(X[train], target, 9, params["fit_kwargs"]["epochs"],
                            **params["model_kwargs"])
            right = classes[model.predict(X[test], verbose=0).argmax(axis=1)] == y[test]
            assert search.cv_results_[f"split{k}_test_score"][i] == right.mean(), (params, k)
    best = search.best_params_
    classes, target = one_hot(y)
    model = by_hand(X, target, 9, best["fit_kwargs"]["epochs"], **best["model_kwargs"])
    assert same_bits(search.best_estimator_.model_.get_weights(), model.get_weights())


def test_pipeline_of_scaler_transformer_and_classifier():
    # numbers as labels: the transformer learns them as a regression target
    X, y = blobs(labels=(2, 0, 1))
    X = X * [1, 10, 100, 1000] + 50  # for the scaler to undo
    kwargs = {"loss": "mse", "activation": None, "hidden": (6,)}
    pipe = make_pipeline(StandardScaler(),
                         SKLearnTransformer(mlp, model_kwargs=kwargs, fit_kwargs={"epochs": 5},
                                            random_state=2),
                         classifier(random_state=3))
    pipe.fit(X, y)
    scaled = StandardScaler().fit_transform(X)
    classes, target = one_hot(y)
    embedder = by_hand(scaled, y[:, None], 2, 5, **kwargs)
    features = embedder.predict(scaled, verbose=0)
    model = by_hand(features, target, 3, 20)
    assert (pipe.predict(X) == classes[model.predict(features, verbose=0).argmax(axis=1)]).all()
    np.testing.assert_allclose(pipe.predict_proba(X), probabilities(model, features), rtol=1e-12)
    assert same_bits([pipe[:2].transform(X)], [features])


# ---- refusals ---------------------------------------------------------------------------
def test_bad_arguments_are_refused_by_name():
    X, y = blobs()
    with pytest.raises(TypeError, match="model: expected a compiled cconv Sequential or a "
                                        "callable returning one, got str"):
        SKLearnClassifier("mlp").fit(X, y)
    with pytest.raises(TypeError, match="model: the callable should return a compiled "
                                        "cconv Sequential, returned NoneType"):
        SKLearnClassifier(lambda X, y: None).fit(X, y)
    uncompiled = cconv.Sequential([cconv.Input((4,)), Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="model: expected a compiled model"):
        SKLearnClassifier(uncompiled).fit(X, y)
    with pytest.raises(ValueError, match="random_state: expected None, a non-negative int "
                                         "or a numpy.random.RandomState, got -1"):
        classifier(random_state=-1).fit(X, y)
    with pytest.raises(ValueError, match="seed=1 and random_state=0 both seed the fit"):
        classifier(random_state=0).fit(X, y, seed=1)
    # a fit that fails leaves the last good one in place, whole
    two = y != "bee"
    est = classifier(fit_kwargs={"epochs": 1}).fit(X[two], y[two])
    model, predicted = est.model_, est.predict(X)
    with pytest.raises(ValueError, match=r"model: its output has shape \(2,\); 3 classes "
                                         r"need \(3,\)"):
        est.set_params(model=lambda X, y: mlp(X, y[:, :2])).fit(X, y)
    assert est.model_ is model and est.classes_.tolist() == ["ant", "cat"]
    assert (est.predict(X) == predicted).all()
    with pytest.raises(ValueError, match="y: a classifier needs at least 2 classes, got one "
                                         "class"):
        classifier().fit(X, np.full(len(X), "cat"))
    linear = classifier(model_kwargs={"loss": "mse", "activation": None}).fit(X, y)
    with pytest.raises(ValueError, match="predict_proba: the model's outputs are not "
                                         "probabilities"):
        linear.predict_proba(X)
