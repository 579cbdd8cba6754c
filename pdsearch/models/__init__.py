"""Model registry: pdsearch's own models, torchvision classifiers, or a user's factory.

Names resolve in that order; ``package.module:factory`` imports a user's factory, which
is called with ``num_classes`` and any extra keyword arguments from the config.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import torchvision
from torch import nn

from pdsearch.errors import PdsearchError
from pdsearch.models.cifar_resnet import resnet20, resnet56
from pdsearch.models.small_cnn import small_cnn

# in_channels is only forwarded to factories that accept it; torchvision takes RGB.
OWN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "small_cnn": small_cnn,
}


def torchvision_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _factory(name: str) -> Callable[..., nn.Module]:
    if name in OWN_MODELS:
        return OWN_MODELS[name]
    if ":" in name:
        module_path, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_path), attr)
        except (ImportError, AttributeError) as exc:
            raise PdsearchError(f"cannot import model factory {name!r}: {exc}") from None
    if name in torchvision_models():
        return lambda **kw: torchvision.models.get_model(name, weights=None, **kw)
    raise PdsearchError(
        f"unknown model {name!r}: use one of {', '.join(OWN_MODELS)}, a torchvision classifier "
        f"(e.g. resnet18, vgg16_bn, mobilenet_v2) or an import path 'package.module:factory'"
    )


def _takes_in_channels(factory: Callable[..., nn.Module]) -> bool:
    try:
        return "in_channels" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def accepts_in_channels(name: str) -> bool:
    """Whether the model can take ``in_channels`` (otherwise data is fed as 3-channel)."""
    return _takes_in_channels(_factory(name))


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    factory = _factory(name)
    if _takes_in_channels(factory):
        kwargs["in_channels"] = in_channels
    elif in_channels != 3:
        raise PdsearchError(f"model {name!r} takes 3-channel input, not {in_channels}")
    try:
        model = factory(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise PdsearchError(f"model {name!r} rejected its arguments: {exc}") from None
    if not isinstance(model, nn.Module):
        raise PdsearchError(f"model factory {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
