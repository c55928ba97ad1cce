"""Recipes: YAML + key=value overrides into a typed TrainConfig; one-line ConfigErrors; the LR schedule."""

from pathlib import Path

import pytest

from notagen.errors import ConfigError
from notagen.train.loop import LRSchedule
from notagen.train.recipe import TrainConfig, build_config, dump_recipe, load_recipe

# DPO recipes have their own schema (tests/test_dpo_recipe.py).
RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").glob("*/*.yaml")
                 if not p.stem.startswith("dpo"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_overrides_are_typed_and_dotted(tmp_path):
    recipe = write(tmp_path, "stage: pretrain\nmodel: {preset: tiny}\nlr: 1.0e-4\nmax_steps: 10\n")
    config = load_recipe(recipe, ["lr=3e-4", "betas=0.9,0.95", "model.dropout=0", "model.hidden_size=128",
                                  "activation_checkpointing=yes", "init_checkpoint=null", "batch_size=8",
                                  "dataset=data/x", "schedule=cosine"])
    assert config.lr == pytest.approx(3e-4) and isinstance(config.lr, float)
    assert config.betas == (0.9, 0.95)
    assert config.model.preset == "tiny"
    assert config.model.overrides == {"dropout": 0.0, "hidden_size": 128}
    assert config.model.build().hidden_size == 128
    assert config.activation_checkpointing is True
    assert config.init_checkpoint is None and config.batch_size == 8 and config.schedule == "cosine"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # PyYAML reads `1e-4` as a string; the field type decides.
    config = load_recipe(write(tmp_path, "lr: 1e-4\n"))
    assert config.lr == pytest.approx(1e-4)


def test_dump_round_trips(tmp_path):
    config = load_recipe(None, ["model.preset=tiny", "model.dropout=0.0", "lr=2e-3", "betas=0.8,0.9",
                                "stage=finetune", "init_checkpoint=ck"])
    again = load_recipe(write(tmp_path, dump_recipe(config)))
    assert again == config
    assert build_config(config.to_dict()) == config


@pytest.mark.parametrize("text, overrides, message", [
    ("lrr: 1.0\n", [], "unknown key 'lrr' (did you mean 'lr'?)"),
    ("", ["batch_sise=2"], "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
    ("", ["lr=fast"], "lr: expected a number, got 'fast'"),
    ("", ["batch_size=2.5"], "batch_size: expected an integer"),
    ("", ["schedule=exp"], "is not one of constant, cosine, linear"),
    ("", ["model.widht=3"], "unknown key 'widht'"),
    ("", ["model.preset=huge"], "unknown model.preset 'huge'"),
    ("", ["model.n_heads=3"], "not divisible"),
    ("", ["batch_size=0"], "batch_size must be positive"),
    ("", ["betas=0.9"], "expected 2 comma-separated values"),
    ("", ["progress=maybe"], "expected true or false"),
    ("", ["lr"], "expected key=value"),
    ("", ["lr.x=1"], "'lr' has no sub-keys"),
    ("- a\n- b\n", [], "expected a mapping"),
    ("lr: [1\n", [], "line"),
])
def test_mistakes_are_one_line_config_errors(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, text), overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")


def test_runnable_checks():
    with pytest.raises(ConfigError, match="no dataset"):
        TrainConfig(max_steps=1).check_runnable()
    with pytest.raises(ConfigError, match="max_steps or epochs"):
        TrainConfig(dataset="d").check_runnable()
    with pytest.raises(ConfigError, match="init_checkpoint"):
        TrainConfig(dataset="d", max_steps=1, stage="finetune").check_runnable()
    TrainConfig(dataset="d", epochs=1).check_runnable()


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bundled_recipes_load_and_name_their_command(recipe):
    config = load_recipe(recipe)
    config.check_runnable()
    assert f"notagen train recipes/{recipe.parent.name}/{recipe.name}" in recipe.read_text()
    assert config.model.build().num_parameters() > 0


def test_lr_schedule_warmup_then_curves():
    constant = LRSchedule(warmup_steps=4, total_steps=20, schedule="constant")
    assert [constant(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = LRSchedule(warmup_steps=4, total_steps=20, schedule="cosine", min_ratio=0.1)
    values = [cosine(s) for s in range(4, 21)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert cosine(12) == pytest.approx(0.55)  # half-way: the mean of peak and floor
    linear = LRSchedule(warmup_steps=0, total_steps=10, schedule="linear")
    assert [linear(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])


def test_every_key_is_documented_in_the_train_help():
    import dataclasses

    from notagen.train.loop import train_command
    from notagen.train.recipe import field_docs

    assert set(field_docs()) == {f.name for f in dataclasses.fields(TrainConfig)}
    for name in field_docs():
        assert f"\n      {name} (" in train_command.__doc__
