"""CLaMP-DPO: sample, score with a music encoder, pick preference pairs per prompt, optimise DPOP, repeat.

`notagen dpo RECIPE.yaml key=value…` runs K iterations; see `notagen.dpo.loop`.
"""

from notagen.dpo.loss import dpop_loss
from notagen.dpo.preferences import PromptPreferences, instrument_grouping_problem, select_preferences
from notagen.dpo.recipe import DPOConfig, load_dpo_recipe

__all__ = ["DPOConfig", "PromptPreferences", "dpop_loss", "instrument_grouping_problem", "load_dpo_recipe",
           "select_preferences"]
