"""DPO recipes: YAML + overrides, prompt lists, validation, the shipped recipes."""

from pathlib import Path

import pytest

from notagen.dpo.recipe import DPOConfig, dump_dpo_recipe, load_dpo_recipe
from notagen.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_overrides_and_prompt_lists(tmp_path):
    recipe = tmp_path / "dpo.yaml"
    recipe.write_text("prompts:\n  - Baroque | Bach, Johann Sebastian | Choral\n"
                      "  - {period: Romantic, composer: 'Aird, James', instrumentation: Fife}\nlr: 1.0e-5\n")
    config = load_dpo_recipe(recipe, ["max_bars=8", "policy_dropout=false", "encoder=null"])
    assert config.prompts == ["Baroque | Bach, Johann Sebastian | Choral", "Romantic | Aird, James | Fife"]
    assert (config.lr, config.max_bars, config.policy_dropout, config.encoder) == (1e-5, 8, False, None)
    assert not config.all_prompts
    config = load_dpo_recipe(None, ["prompts=A | B | C; D | E | F"])
    assert config.prompts == ["A | B | C", "D | E | F"]
    assert load_dpo_recipe(None).all_prompts


def test_round_trip(tmp_path):
    config = load_dpo_recipe(None, ["iterations=2", "prompts=A | B | C"])
    (tmp_path / "again.yaml").write_text(dump_dpo_recipe(config))
    assert load_dpo_recipe(tmp_path / "again.yaml") == config


@pytest.mark.parametrize("override, message", [
    ("portion=0.7", "portion"), ("lr=0", "lr must be positive"), ("betta=1", "did you mean 'beta'"),
    ("prompts=Baroque only", "not 'period | composer | instrumentation'"), ("top_p=2", "top_p"),
    ("iterations=two", "expected a number"),
])
def test_mistakes_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|")):
        load_dpo_recipe(None, [override])


def test_runnable_needs_checkpoint_and_reference():
    with pytest.raises(ConfigError, match="init_checkpoint"):
        DPOConfig().check_runnable()
    with pytest.raises(ConfigError, match="reference"):
        DPOConfig(init_checkpoint="x").check_runnable()


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*/dpo*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_load(path):
    config = load_dpo_recipe(path)
    assert config.init_checkpoint and config.reference
    assert f"notagen dpo recipes/{path.parent.name}/{path.name}" in path.read_text()  # the command is in the header
