"""The metrics compile accepts, by Keras's names, and whether a higher value is better
(what callbacks' mode="auto" needs to watch them). Each name is accuracy: cconv reports
it as "accuracy"."""

# name -> whether higher is better
METRICS = {"accuracy": True, "acc": True, "categorical_accuracy": True,
           "sparse_categorical_accuracy": True}


def higher_is_better(name):
    """True for a metric where higher is better, False for a loss, None when unknown."""
    if name == "loss":
        return False
    return METRICS.get(name)
