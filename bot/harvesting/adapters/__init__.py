"""Harvesting adapters: each turns one generator bot's messages into generations and choices.
An adapter is configuration plus a small parser, Discord-object-free (plain fields in).

Every module of this package except ``base`` is one adapter: its ``ADAPTER`` (an
:class:`~bot.harvesting.adapters.base.Adapter`) is registered under its name when the package
is imported, so adding an adapter is adding a module (and its test)."""

from __future__ import annotations

import importlib
import pkgutil

from discord import app_commands

from bot.harvesting.adapters.base import Adapter


def _discover() -> dict[str, Adapter]:
    adapters: dict[str, Adapter] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        adapter = getattr(module, "ADAPTER", None)
        if not isinstance(adapter, Adapter):
            raise TypeError(f"{module.__name__} defines no ADAPTER")
        adapters[adapter.name] = adapter
    return adapters


REGISTRY: dict[str, Adapter] = _discover()
# The adapter option of ``/hps admin channels``.
ADAPTER_CHOICES = [app_commands.Choice(name=name, value=name) for name in REGISTRY]


def adapter_named(name: str | None) -> Adapter | None:
    """The adapter registered as ``name`` (None for an unknown name or None)."""
    return REGISTRY.get(name) if name is not None else None


def reaction_may_pick(emoji: str) -> bool:
    """Whether a reaction with ``emoji`` is a pick under some adapter (a cheap first filter
    before the channel's adapter is looked up)."""
    return any(adapter.reaction_position(emoji) is not None for adapter in REGISTRY.values())
