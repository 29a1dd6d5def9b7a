"""plot_model and model_to_dot: cgru does not draw models."""
import importlib.util

__all__ = ["model_to_dot", "plot_model"]

_MESSAGE = ("{name} needs pydot (`pip install pydot`) and graphviz "
            "(https://graphviz.gitlab.io/download/), and cgru does not draw models even with "
            "them: use `model.summary()`, or build the same model in Keras to plot it.")


def plot_model(model, to_file="model.png", **kwargs):
    """Raises: ImportError when pydot is missing (as Keras does), NotImplementedError
    otherwise, since cgru does not draw models."""
    _refuse("plot_model")


def model_to_dot(model, **kwargs):
    """Raises as :func:`plot_model` does."""
    _refuse("model_to_dot")


def _refuse(name):
    message = _MESSAGE.format(name=f"`{name}`")
    if importlib.util.find_spec("pydot") is None:
        raise ImportError(message)
    raise NotImplementedError(message)
