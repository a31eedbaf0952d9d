"""The supported-layers table, generated from the registry."""

from keras_dropneuron.layer_rules import registry

_HEADER = (
    "| Layers | Weights regularized and pruned (input unit axes, output unit axes) "
    "| `slim_model` |\n|---|---|---|"
)


def supported_layers_table() -> str:
    """A Markdown table of the registered layer classes and what their rules do.

    One row per rule and weight layout: the layer classes, their weights
    with the axes of their input and output units, and what `slim_model`
    does with them (removes units, passes channels through, or keeps them
    whole). Classes registered with `register_rule` appear too.

    Returns:
        The table, one line per row, without a trailing newline.

    Example:

    >>> print(supported_layers_table())
    | Layers | Weights regularized and pruned (input unit axes, output unit axes) | ...
    """
    rows: dict[tuple[int, str, str], list[str]] = {}
    for cls, rule in registry.registered().items():
        key = (id(rule), rule.describe_weights(cls), rule.describe_surgery())
        rows.setdefault(key, []).append(f"`{cls.__name__}`")
    lines = [_HEADER]
    for (_, weights, surgery), names in rows.items():
        lines.append(f"| {', '.join(names)} | {weights} | {surgery} |")
    return "\n".join(lines)
