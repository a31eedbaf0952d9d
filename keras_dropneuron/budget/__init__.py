"""Prune to a budget: the user names the target, the library finds the strength.

The modules follow the workflow:

- `targets`: the budget the user names (`check_target`) and `BudgetError`.
- `penalty_scale`: one variable that scales every DropNeuron penalty.
- `thresholds`: candidate thresholds and trial pruning, measured by the
  surgeon (`keras_dropneuron.surgery.size`).
- `controller`: `BudgetCallback`, which adapts the scale during `fit` until
  the slim model meets the budget.
- `data`, `report`, `pipeline`: `prune_to_budget`, which regularizes a copy,
  trains it to the budget with the controller, fine-tunes, chooses the
  threshold, slims, verifies and checks the accuracy (`BudgetReport`).
"""

from keras_dropneuron.budget.controller import BudgetCallback
from keras_dropneuron.budget.pipeline import prune_to_budget
from keras_dropneuron.budget.report import BudgetReport
from keras_dropneuron.budget.targets import BudgetError

__all__ = ["BudgetCallback", "BudgetError", "BudgetReport", "prune_to_budget"]
