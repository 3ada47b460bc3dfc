"""Finding a model's final ``nn.Linear``: the layer whose input is the penultimate feature vector.

Several methods need it (feature collectors, GraNd, last-layer influence) and the ``Classifier``
reads the number of classes from it; one rule serves them all: the layer named by the user, or
else the last ``nn.Linear`` in registration order.
"""

from __future__ import annotations

from torch import nn


def find_last_linear(
    model: nn.Module, layer: str | None = None, *, purpose: str = "this method", setting: str = "layer"
) -> tuple[str, nn.Linear]:
    """The final ``nn.Linear`` of ``model`` and its name: the one named by ``layer``, or else the
    last ``nn.Linear`` in ``model.modules()`` order (registration order).

    ``purpose`` and ``setting`` (the caller's name for ``layer``) complete the error messages.
    """
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if layer is not None:
        try:
            module = model.get_submodule(layer)
        except AttributeError as error:
            raise ValueError(
                f"{setting}={layer!r} names no submodule of {type(model).__name__}; its nn.Linear layers are "
                f"{[name for name, _ in linears]}."
            ) from error
        if not isinstance(module, nn.Linear):
            raise TypeError(
                f"{setting}={layer!r} is a {type(module).__name__}, not an nn.Linear; {purpose} needs the final "
                "fully-connected layer that maps penultimate features to class logits."
            )
        return layer, module
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer; {purpose} needs the final fully-connected layer. Name "
            "it with {setting}='path.to.layer' if it is wrapped in another module."
        )
    return linears[-1]
