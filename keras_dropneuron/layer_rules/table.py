"""The supported-layers table, generated from the registry."""

import re

from keras_dropneuron.layer_rules import registry

_HEADER = (
    "| Layers | Li group of output unit `j` | Lo group of input unit `i` | `slim_model` |\n"
    "|---|---|---|---|"
)
# What no rule covers: the surgeon keeps it whole, with the reason in its report.
_BARRIER_ROW = (
    "| any other layer, and layers holding weights their rule does not know "
    "(quantization scales, LoRA) or overriding the `call()` of a registered class "
    "| - | - | kept whole |"
)
_DIMENSIONS = re.compile(r"^(.*?)([123]D)(.*)$")


def _compact(names: list[str]) -> list[str]:
    """`Conv1D`, `Conv2D`, `Conv3D` -> `Conv1D/2D/3D` (neighbours that differ in `ND` only)."""
    merged: list[tuple[tuple[str, str] | None, list[str]]] = []
    for name in names:
        match = _DIMENSIONS.match(name)
        key = (match.group(1), match.group(3)) if match else None
        if key is not None and merged and merged[-1][0] == key:
            merged[-1][1].append(match.group(2))
        else:
            merged.append((key, [match.group(2)] if match else [name]))
    return [
        f"`{parts[0]}`" if key is None else f"`{key[0]}{'/'.join(parts)}{key[1]}`"
        for key, parts in merged
    ]


def supported_layers_table() -> str:
    """A Markdown table of the registered layer classes and what their rules do.

    One row per rule (and per weight layout, where a rule's classes differ):
    the layer classes, the groups their penalties and pruning act on (the
    incoming group of output unit `j` and the outgoing group of input unit
    `i` of each weight, in index notation), and what `slim_model` does with
    them. Classes registered with `register_rule` appear too; a last row
    says what no rule covers.

    Returns:
        The table, one line per row, without a trailing newline.

    Example:

    >>> print(supported_layers_table())
    | Layers | Li group of output unit `j` | Lo group of input unit `i` | `slim_model` |
    |---|---|---|---|
    | `Dense` | `kernel[..., j]` | `kernel[..., i, :]` | units removed (`units` lowered) |
    ...
    """
    rows: dict[tuple[int, str, str, str], list[str]] = {}
    for cls, rule in registry.registered().items():
        key = (id(rule), *rule.describe_groups(cls), rule.describe_surgery())
        rows.setdefault(key, []).append(cls.__name__)
    lines = [_HEADER]
    titles = {id(rule): rule.table_title for rule in registry.registered().values()}
    for (key, incoming, outgoing, surgery), names in rows.items():
        layers = titles[key] or ", ".join(_compact(names))
        lines.append(f"| {layers} | {incoming} | {outgoing} | {surgery} |")
    lines.append(_BARRIER_ROW)
    return "\n".join(lines)
