"""Model registry: pdsearch's own models (and any ``@register_model``), timm's by ``timm/NAME``,
torchvision classifiers, or a factory.

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
from pdsearch.registry import did_you_mean

# in_channels is only forwarded to factories that accept it; torchvision takes RGB.
OWN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet56": resnet56,
    "small_cnn": small_cnn,
}


def register_model(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Name a model factory after itself (timm's ``register_model``): ``model: {name: my_net}``."""
    OWN_MODELS[factory.__name__] = factory
    return factory


def torchvision_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


TIMM = "timm/"  # model: {name: timm/resnet50d}: timm's architecture by name


def _timm_factory(name: str) -> Callable[..., nn.Module]:
    """timm's architecture ``name`` (randomly initialised; weights come from ``baseline.checkpoint``)."""
    try:
        import timm
    except ImportError:
        raise PdsearchError(f'model {TIMM}{name} needs timm: pip install -e ".[timm]"') from None
    if not timm.is_model(name):
        raise PdsearchError(f"unknown timm model {name!r}{did_you_mean(name, timm.list_models())}: "
                            "pdsearch models --filter TEXT lists the names")

    def factory(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)

    return factory


def timm_models(text: str = "") -> list[str]:
    """timm's architectures whose name holds ``text`` ([] without timm)."""
    try:
        import timm
    except ImportError:
        return []
    return [TIMM + name for name in timm.list_models(f"*{text}*" if text else "")]


def list_models(text: str = "") -> dict[str, list[str]]:
    """The names ``model.name`` takes, by where they come from, holding ``text`` (the ``models`` verb)."""
    found = {"pdsearch": list(OWN_MODELS), "torchvision": torchvision_models(), "timm": timm_models(text)}
    return {source: [n for n in names if text in n] for source, names in found.items()}


def _factory(name: str) -> Callable[..., nn.Module]:
    if name in OWN_MODELS:
        return OWN_MODELS[name]
    if name.startswith(TIMM):
        return _timm_factory(name[len(TIMM):])
    if ":" in name:
        module_path, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_path), attr)
        except (ImportError, AttributeError) as exc:
            raise PdsearchError(f"cannot import model factory {name!r}: {exc}") from None
    if name in torchvision_models():
        return lambda **kw: torchvision.models.get_model(name, weights=None, **kw)
    raise PdsearchError(
        f"unknown model {name!r}{did_you_mean(name, [*OWN_MODELS, *torchvision_models()])}: use one of "
        f"{', '.join(OWN_MODELS)}, a torchvision classifier (e.g. resnet18, vgg16_bn, mobilenet_v2), a timm one "
        "(timm/resnet50d) or an import path 'package.module:factory'"
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
