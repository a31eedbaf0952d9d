"""`SlimReport`: what `slim_model` removed, layer by layer."""

import dataclasses

import keras

from keras_dropneuron import layer_rules
from keras_dropneuron.surgery.graph import Graph, build_graph


def layer_stats(graph: Graph) -> dict[str, tuple[str, int, int, int]]:
    """Layer name -> (class name, units, params, multiply-adds), in call order."""
    stats = {}
    for call in graph.calls:
        layer = call.layer
        if not hasattr(layer, "count_params") or not call.inputs:
            continue
        tensors_in = [graph.tensors[key] for key in call.inputs]
        tensor_out = graph.tensors[call.outputs[0]]
        macs = layer_rules.rule_for(layer).call_macs(call, tensors_in, tensor_out)
        params = layer.count_params() if layer.built else 0
        if call.name in stats:  # shared layer: parameters once, work per call
            name, units, params_, macs_ = stats[call.name]
            stats[call.name] = (name, units, params_, macs_ + macs)
        elif params or macs:
            units = layer_rules.rule_for(layer).unit_count(layer, tensor_out)
            stats[call.name] = (type(layer).__name__, units, params, macs)
    return stats


@dataclasses.dataclass
class SlimReport:
    """Per-layer units, parameters and multiply-adds before and after slimming.

    Printing it shows a table like `model.summary()`.

    Attributes:
        rows: One dict per layer with weights or multiply-adds (see `to_list`).
        kept_inputs: Model input name -> kept channel indices; only filled
            when `slim_model(..., drop_inputs=True)`.
        max_deviation: The largest absolute output difference between the
            source and the slim model that verification measured, or `None`
            when it did not run (`verify=False`) or could not (a model that is
            random at inference).
        tolerance: The relative tolerance verification applied, or `None`.
        latency: With `slim_model(..., benchmark=BATCH)`, the measured median
            `predict_on_batch` time of both models at that batch size on this
            machine: `batch_size`, `before_ms`, `after_ms`, `speedup`.
        kept_whole: Name -> why the surgeon kept it whole, for each layer
            with weights that a rule would otherwise resize or that has no
            rule (`"layer type without a rule"`, `"MyBlock overrides call()"`).
    """

    rows: list
    kept_inputs: dict = dataclasses.field(default_factory=dict)
    max_deviation: float | None = None
    tolerance: float | None = None
    latency: dict | None = None
    kept_whole: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def compare(cls, before: keras.Model, after: keras.Model, **kwargs) -> "SlimReport":
        """Builds the report from the source and the slim model.

        Args:
            before: The source model.
            after: The slim model.
            **kwargs: `kept_inputs`, `max_deviation`, `tolerance`, `latency`,
                `kept_whole`.

        Returns:
            A `SlimReport`.
        """
        old = layer_stats(build_graph(before))
        new = layer_stats(build_graph(after))
        rows = []
        for name, (class_name, units, params, macs) in old.items():
            _, units_after, params_after, macs_after = new.get(name, (None, 0, 0, 0))
            rows.append(
                {
                    "name": name,
                    "class_name": class_name,
                    "units_before": units,
                    "units_after": units_after,
                    "params_before": params,
                    "params_after": params_after,
                    "macs_before": macs,
                    "macs_after": macs_after,
                }
            )
        return cls(rows, **kwargs)

    def to_list(self) -> list[dict]:
        """Returns the rows as a list of plain dicts (a copy)."""
        return [dict(row) for row in self.rows]

    def totals(self) -> dict[str, int]:
        """Returns summed `units_*`, `params_*` and `macs_*` over all rows."""
        keys = (
            [k for k in self.rows[0] if k.endswith(("_before", "_after"))] if (self.rows) else []
        )
        return {k: sum(row[k] for row in self.rows) for k in keys}

    def __str__(self):
        header = ("Layer (type)", "Units", "Params", "Mult-adds")
        lines = []
        for row in self.rows:
            lines.append(
                (
                    f"{row['name']} ({row['class_name']})",
                    f"{row['units_before']} -> {row['units_after']}",
                    f"{row['params_before']:,} -> {row['params_after']:,}",
                    f"{row['macs_before']:,} -> {row['macs_after']:,}",
                )
            )
        totals = self.totals()
        if totals:
            total_line = (
                "Total",
                f"{totals['units_before']} -> {totals['units_after']}",
                f"{totals['params_before']:,} -> {totals['params_after']:,}",
                f"{totals['macs_before']:,} -> {totals['macs_after']:,}",
            )
        else:
            total_line = ("Total", "0 -> 0", "0 -> 0", "0 -> 0")
        widths = [max(len(r[i]) for r in [header, total_line, *lines]) for i in range(4)]
        rule = "-" * (sum(widths) + 3 * 3)

        def fmt(cells):
            return "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = ["Slim report", rule, fmt(header), rule.replace("-", "=")]
        out += [fmt(line) for line in lines]
        out += [rule, fmt(total_line)]
        if totals and totals["params_before"]:
            share = 1 - totals["params_after"] / totals["params_before"]
            out.append(f"Parameters removed: {share:.1%}")
        if self.max_deviation is not None:
            line = f"Max output deviation (verified batch): {self.max_deviation:.3g}"
            if self.tolerance is not None:
                line += f" (relative tolerance {self.tolerance:.3g} per output channel)"
            out.append(line)
        if self.latency is not None and totals and totals["macs_after"]:
            mac_ratio = totals["macs_before"] / totals["macs_after"]
            out.append(
                f"Latency at batch {self.latency['batch_size']} (this machine): "
                f"{self.latency['before_ms']:.2f} ms -> {self.latency['after_ms']:.2f} ms, "
                f"{self.latency['speedup']:.2f}x as fast (multiply-add ratio {mac_ratio:.2f}x)"
            )
        if self.kept_inputs:
            for name, kept in self.kept_inputs.items():
                out.append(f"Input {name!r}: kept {len(kept)} channels")
        for name, reason in self.kept_whole.items():
            out.append(f"Kept whole: {name} ({reason})")
        return "\n".join(out)

    __repr__ = __str__
