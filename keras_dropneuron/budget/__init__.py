"""Prune to a budget: the user names the target, the library finds the strength.

The modules follow the workflow:

- `targets`: the budget the user names (`check_target`) and `BudgetError`.
- `penalty_scale`: one variable that scales every DropNeuron penalty.
- `thresholds`: candidate thresholds and trial pruning, measured by the
  surgeon (`keras_dropneuron.surgery.size`).
- `ranking`: the units ranked by the magnitude of their group, cut weakest
  first and given back where they fit (`UnitRanking`, `ranked_cut`).
- `penalty_cut`, `gradual`: each schedule's cut at a controller event (the
  smallest threshold that meets the target; a cubic schedule of cuts).
- `loss_guard`: the data loss measured on held-out data, watched for a rise.
- `controller`: `BudgetCallback`, which adapts the scale and cuts during
  `fit` until the slim model meets the budget.
- `anneal`, `distill`: the fine-tuning's cosine learning rate and its
  distillation from the original model.
- `data`, `report`, `pipeline`: `prune_to_budget`, which regularizes a copy,
  trains it to the budget with the controller, fine-tunes, chooses the
  threshold, slims, verifies and checks the accuracy (`BudgetReport`).
"""

from keras_dropneuron.budget.controller import BudgetCallback
from keras_dropneuron.budget.pipeline import prune_to_budget
from keras_dropneuron.budget.report import BudgetReport
from keras_dropneuron.budget.targets import BudgetError

__all__ = ["BudgetCallback", "BudgetError", "BudgetReport", "prune_to_budget"]
