"""A slim keras-hub model stays a keras-hub model.

A keras-hub `Backbone` re-creates its blocks from one config that holds one
feed-forward width for every block, and a `Task` (`CausalLM`,
`TextClassifier`, ...) wraps a backbone and a preprocessor. So the slim model
of either is built from its own class's config, with the width every block
needs: the largest count of units any block keeps. Each block keeps its
alive units and as many of its dead ones as it takes to reach that width;
keeping a dead unit is exact. The weights are then filled from the source:
sliced for the blocks, copied whole for every other layer.

keras-hub is optional: nothing here imports it unless the model is one of its.
"""

import dataclasses

import keras
import numpy as np

from keras_dropneuron import keras_internals, layer_rules
from keras_dropneuron.layer_rules.base import attribute
from keras_dropneuron.layer_rules.transformer_block import (
    BlockUnits,
    TransformerBlockRule,
    padded_units,
)
from keras_dropneuron.surgery import copying
from keras_dropneuron.surgery.plan import Plan

WIDTHS = ("uniform", "per_layer")


def is_hub_model(model: keras.Model) -> bool:
    """Whether `model` is a keras-hub `Backbone` or `Task`."""
    return any(
        cls.__module__.startswith("keras_hub.") and cls.__name__ in ("Backbone", "Task")
        for cls in type(model).__mro__
    )


def why_not_same_class(plan: Plan) -> str | None:
    """Why the slim model cannot keep the source's keras-hub class, or `None`.

    Only feed-forward widths can change in a keras-hub class's config: any
    other resized layer (or one whose units a rule would remove otherwise)
    makes the slim model a plain Functional one.
    """
    widths, whole = set(), None
    for index, call in enumerate(plan.graph.calls):
        rule = plan.rules[index]
        if isinstance(rule, TransformerBlockRule):
            widths.add((rule.ffn.width_argument, rule.ffn.width_per_unit))
            continue
        if _sets_arguments(rule):
            continue
        if _is_block(layer_rules.rule_for(call.layer)):
            whole = whole or f"block {call.layer.name!r} is kept whole ({plan.reasons[index]})"
        if plan.resized(index):
            return f"layer {call.layer.name!r} loses channels, which its class's config cannot say"
    if len(widths) > 1:
        return "its blocks set their widths in different ways"
    if whole and any(plan.resized(i) for i in range(len(plan.graph.calls))):
        return f"{whole}, so the blocks cannot share one smaller width"
    return None


def _sets_arguments(rule: layer_rules.LayerRule) -> bool:
    """Whether `rule` gives the config arguments for its layer itself (`config_arguments`).

    Such a layer holds its blocks and sets one width for all of them, as the
    class's config does (keras-hub's `ViTEncoder`): its plan is uniform already.
    """
    return callable(getattr(rule, "config_arguments", None))


def _is_block(rule: layer_rules.LayerRule) -> bool:
    return isinstance(rule, TransformerBlockRule) or _sets_arguments(rule)


def _encoders(plan: Plan) -> dict[int, tuple]:
    """`id(layer)` -> `(rule, layer, kept units or None)` for the layers of `_sets_arguments`."""
    return {
        id(call.layer): (plan.rules[index], call.layer, plan.inner.get(index))
        for index, call in enumerate(plan.graph.calls)
        if _sets_arguments(plan.rules[index])
    }


def _kept_units(plan: Plan) -> dict[int, BlockUnits]:
    """`id(block)` -> the units (and key/value groups) the plan keeps, for every block."""
    kept = {}
    for index, call in enumerate(plan.graph.calls):
        rule = plan.rules[index]
        if isinstance(rule, TransformerBlockRule):
            width = attribute(call.layer, f"{rule.ffn.up}.kernel").shape[1]
            kept[id(call.layer)] = plan.inner.get(index, BlockUnits(np.arange(width)))
    return kept


def _uniform(kept: dict, blocks: dict, rules: dict, keys: set) -> tuple[dict, dict]:
    """Each block's units and groups padded with its lowest dead ones to the largest count.

    Heads stay where the class's config (its keys: `keys`) cannot set their
    number and size. Returns the padded `BlockUnits` per block and the config
    arguments that give every block those widths.
    """
    first = next(iter(rules.values()))
    heads = first.heads
    same = len({rule.heads for rule in rules.values()}) == 1
    if (
        heads is None
        or not same
        or not {heads.query_heads, heads.kv_heads, heads.head_dim} <= keys
    ):
        kept = {key: BlockUnits(k.units) for key, k in kept.items()}
    sizes = {key: attribute(blocks[key], f"{rules[key].ffn.up}.kernel").shape[1] for key in kept}
    units = max(len(k.units) for k in kept.values())
    arguments = {first.ffn.width_argument: units * first.ffn.width_per_unit}
    groups = None
    if any(k.groups is not None for k in kept.values()):
        heads = first.heads
        kv = {
            key: attribute(blocks[key], f"{heads.value}.kernel").shape[heads.head_axis]
            for key in kept
        }
        groups = max(len(k.groups) if k.groups is not None else kv[key] for key, k in kept.items())
        key = next(iter(kept))
        query = attribute(blocks[key], f"{heads.query}.kernel").shape[heads.head_axis]
        arguments[heads.query_heads] = groups * (query // kv[key])
        arguments[heads.kv_heads] = groups
        arguments[heads.head_dim] = attribute(blocks[key], f"{heads.value}.kernel").shape[-1]
    padded = {}
    for key, k in kept.items():
        kept_groups = None
        if groups is not None:
            own = k.groups if k.groups is not None else np.arange(kv[key])
            kept_groups = padded_units(own, kv[key], groups)
        padded[key] = BlockUnits(padded_units(k.units, sizes[key], units), kept_groups)
    return padded, arguments


def _with_arguments(config: dict, arguments: dict) -> dict:
    """A copy of a keras-hub config with block arguments set (in its backbone)."""
    config = dict(config)
    backbone = config.get("backbone")
    if isinstance(backbone, dict):
        config["backbone"] = {**backbone, "config": _with_arguments(backbone["config"], arguments)}
        return config
    for argument, value in arguments.items():
        if argument not in config:
            raise ValueError(f"no `{argument}` in the config")
        config[argument] = value
    return config


def _leaves(model):
    """The layers of `model` and of the models inside it, preprocessors left out."""
    leaves = []
    for layer in keras_internals.sublayers(model, recursive=False):
        if isinstance(layer, keras.Model):
            leaves += _leaves(layer)
        elif not _is_preprocessor(layer):
            leaves.append(layer)
    return leaves


def _is_preprocessor(layer):
    return any(cls.__name__ == "Preprocessor" for cls in type(layer).__mro__)


def _config_keys(model: keras.Model) -> set:
    """The arguments of the class's config that holds the blocks' widths (its backbone's)."""
    config = model.get_config()
    backbone = config.get("backbone")
    return set(backbone["config"] if isinstance(backbone, dict) else config)


def uniform_plan(model: keras.Model, plan: Plan) -> Plan:
    """`plan` with every block's units and heads as `same_class` keeps them.

    For the reports: the counts of the model `slim_model` builds by default.
    `plan` itself where the slim model cannot keep the class.
    """
    if not is_hub_model(model) or why_not_same_class(plan) is not None:
        return plan
    kept = _kept_units(plan)
    if not kept:
        return plan
    blocks = {id(layer): layer for call in plan.graph.calls if id(layer := call.layer) in kept}
    rules = {key: layer_rules.rule_for(block) for key, block in blocks.items()}
    padded, _ = _uniform(kept, blocks, rules, _config_keys(model))
    inner = dict(plan.inner)
    for index, call in enumerate(plan.graph.calls):
        if id(call.layer) in padded:
            inner[index] = padded[id(call.layer)]
    return dataclasses.replace(plan, inner=inner)


def same_class(model: keras.Model, plan: Plan) -> keras.Model:
    """The slim model of a keras-hub model, as the same class with uniform widths.

    Args:
        model: A keras-hub `Backbone` or `Task`.
        plan: The surgeon's plan for it (see `why_not_same_class`).

    Returns:
        A new model of `type(model)`; a `Task` shares `model`'s preprocessor
        (it holds no weights).
    """
    kept = _kept_units(plan)
    blocks = {id(layer): layer for call in plan.graph.calls if id(layer := call.layer) in kept}
    rules = {key: layer_rules.rule_for(block) for key, block in blocks.items()}
    config = model.get_config()
    arguments = {}
    if blocks:
        kept, arguments = _uniform(kept, blocks, rules, _config_keys(model))
    sliced = {key: (rules[key], units) for key, units in kept.items()}
    for key, (rule, layer, units) in _encoders(plan).items():
        for argument, value in rule.config_arguments(layer, units).items():
            if arguments.setdefault(argument, value) != value:
                raise ValueError(f"its layers need different values of `{argument}`")
        if units is not None:
            sliced[key] = (rule, units)
    if arguments:
        config = _with_arguments(config, arguments)
    return _recreate(model, config, sliced)


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of a keras-hub model: its own class, every weight copied.

    A `Task` shares `model`'s preprocessor (it holds no weights).
    """
    return _recreate(model, model.get_config(), {})


def _recreate(model, config, sliced):
    """`type(model)` from `config`, filled with `model`'s weights.

    `sliced`: `id(block)` -> `(rule, kept units)` for the blocks that lose
    units; every other layer's state is copied whole.
    """
    if "preprocessor" in config:
        config["preprocessor"] = model.preprocessor
    if isinstance(config.get("backbone"), dict):
        config["backbone"] = keras.layers.deserialize(config["backbone"])
    new = type(model).from_config(config)
    sampler = getattr(model, "sampler", None)
    if sampler is not None and hasattr(sampler, "get_config"):
        # `compile(sampler=...)` is not in the config: `generate()` keeps the user's choice.
        new.sampler = type(sampler).from_config(sampler.get_config())
    old_layers, new_layers = _leaves(model), _leaves(new)
    if [type(layer) for layer in old_layers] != [type(layer) for layer in new_layers]:
        raise ValueError("the re-created model holds other layers")
    for old, fresh in zip(old_layers, new_layers, strict=True):
        if id(old) not in sliced:
            copying.copy_state(old, fresh)
            continue
        rule, units = sliced[id(old)]
        # A block's channels all stay: only its units (`inner`) are cut.
        cut = layer_rules.Cut(kept_in=None, kept_out=np.arange(0), inner=units)
        for path, value in rule.resize(old, {}, cut).items():
            variable = attribute(fresh, path)
            variable.assign(value.astype(variable.dtype))
    return new


class LayerCopies:
    """Copies of a keras-hub model's layers, made by re-creating the model from its class.

    Some keras-hub layers cannot be re-created from their own config
    (`get_config()` reads an attribute the class never sets, or
    `from_config` refuses what it wrote), though the model that holds them
    round-trips `.keras` through its class's config. Such a layer, kept
    whole, is taken from one copy of the whole model made that way, with
    every variable copied: its exact state, never a guess.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._copies = None

    def __call__(self, layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if self._copies is None:
            copy = copy_model(self.model)
            self._copies = {
                id(old): new for old, new in zip(_leaves(self.model), _leaves(copy), strict=True)
            }
        return self._copies.get(id(layer))
