"""Recipes: every shipped one validates; bad keys, types and ranges are named."""
from __future__ import annotations

import pytest

from emlc_cli.errors import RecipeError
from emlc_cli.recipe.schema import builtin_recipe_names, builtin_recipes_dir, load_recipe, recipe_from_dict


def test_shipped_recipes_include_the_promised_ones():
    names = builtin_recipe_names()
    for name in ("quick", "default", "cifar10_resnet34", "clothing1m_resnet50"):
        assert name in names


@pytest.mark.parametrize("name", builtin_recipe_names())
def test_every_shipped_recipe_validates(name):
    from emlc_cli.models.build import validate_backbone

    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    validate_backbone(recipe.model.backbone, recipe.model.weights, fetch=False)  # offline: no Hub model is looked for


def test_builtin_dir_is_the_package_resource():
    assert (builtin_recipes_dir() / "quick.yaml").is_file()


def test_overrides_apply_with_types():
    recipe = load_recipe("quick", ["train.epochs=6", "model.width=8", "correct.rule=argmax", "train.teacher_lr=1e-2"])
    assert recipe.train.epochs == 6 and recipe.model.width == 8 and recipe.correct.rule == "argmax"
    assert recipe.train.teacher_lr == pytest.approx(0.01)


@pytest.mark.parametrize("raw, fragment", [
    ({"train": {"epocs": 3}}, "train.epocs' : unknown key (did you mean 'epochs'?)"),
    ({"trian": {}}, "'trian': unknown key (did you mean 'train'?)"),
    ({"train": {"epochs": "many"}}, "train.epochs': expected int, got str"),
    ({"train": {"epochs": 0}}, "expected a value in [1, 100000], got 0"),
    ({"correct": {"rule": "argmx"}}, "did you mean 'argmax'?"),
    ({"meta": {"steps": 5}, "train": {"batch_size": 64}}, "must be divisible by meta.steps=5"),
    ({"meta": {"warmup_epochs": 10}, "train": {"epochs": 10}}, "meta.warmup_epochs"),
    ({"model": {"small_stem": "yes"}}, "expected bool"),
])
def test_bad_values_name_the_key(raw, fragment):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw)
    assert fragment.replace("' :", "':") in info.value.one_line()


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: [64\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    assert "bad.yaml" in info.value.one_line() and "line" in info.value.one_line()


def test_unknown_recipe_name_lists_shipped():
    with pytest.raises(RecipeError) as info:
        load_recipe("quik")
    assert "did you mean 'quick'" in info.value.one_line()


def test_recipe_values_are_never_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train:\n  epochs: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(RecipeError):
        load_recipe(str(path))


def test_unknown_backbone_lists_close_names():
    from emlc_cli.models.build import validate_backbone

    with pytest.raises(RecipeError) as info:
        validate_backbone("resnet180", "none")
    assert "model.backbone" in info.value.one_line() and "resnet18" in info.value.one_line()


@pytest.mark.parametrize("value, fragment", [
    ("local-dir:", "local-dir: needs a folder"),
    ("hf-hub:", "must look like hf-hub:ORG/NAME"),
    ("a: b", "is not a model name"),
])
def test_a_backbone_prefix_without_a_name_is_a_name_not_a_mapping(value, fragment):
    """YAML reads `local-dir:` as {'local-dir': None}; the override must reach the name check as text."""
    with pytest.raises(RecipeError) as info:
        load_recipe("frozen", [f"model.backbone={value}"])
    assert f"override model.backbone={value}" in info.value.one_line() and fragment in info.value.one_line()
    assert "dict" not in info.value.one_line()


def test_optimiser_factors_are_recipe_keys_with_the_former_constants():
    train = load_recipe("quick").train
    assert (train.teacher_momentum, train.teacher_decay_factor, train.finetune_lr_factor) == (0.9, 0.1, 0.1)
    changed = load_recipe("quick", ["train.teacher_momentum=0.5", "train.finetune_lr_factor=0.2"]).train
    assert (changed.teacher_momentum, changed.finetune_lr_factor) == (0.5, 0.2)
    with pytest.raises(RecipeError) as info:
        load_recipe("quick", ["train.teacher_momentum=1.5"])
    assert "train.teacher_momentum" in info.value.one_line() and "[0, 0.999]" in info.value.one_line()


def test_rule_choices_are_the_rule_table():
    from emlc_cli.decide.rules import RULES

    for name in RULES:
        assert recipe_from_dict({"correct": {"rule": name}}).correct.rule == name
    with pytest.raises(RecipeError) as info:
        recipe_from_dict({"correct": {"rule": "vote"}})
    assert ", ".join(RULES) in info.value.one_line()


def test_trainer_takes_the_optimiser_factors_from_the_recipe():
    import torch

    from emlc_cli.cache.batches import TensorSet
    from emlc_cli.train.trainer import MetaTrainer

    data = TensorSet(torch.zeros(8, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1] * 4))
    small = ["model.width=4", "data.image_size=16", "train.batch_size=4", "train.clean_batch_size=4"]
    adam = load_recipe("quick", [*small, "train.teacher_decay_factor=0.5"])
    trainer = MetaTrainer(adam, 2, data, data, data, device=torch.device("cpu"))
    assert trainer.teacher_opt.param_groups[0]["weight_decay"] == adam.train.weight_decay * 0.5
    sgd = load_recipe("quick", [*small, "train.teacher_optimizer=sgd", "train.teacher_momentum=0.7"])
    trainer = MetaTrainer(sgd, 2, data, data, data, device=torch.device("cpu"))
    assert trainer.teacher_opt.param_groups[0]["momentum"] == 0.7


@pytest.mark.parametrize(("epochs", "warmup"), [(1, 0), (2, 1), (3, 2), (5, 3), (8, 4), (10, 5), (20, 5)])
def test_lowered_epochs_keep_the_warm_ups_share(epochs, warmup):
    """quick warms up 5 of 10 epochs: train.epochs=N alone keeps that share (half up, below N), never raises it."""
    recipe = load_recipe("quick", [f"train.epochs={epochs}"])
    assert (recipe.train.epochs, recipe.meta.warmup_epochs) == (epochs, warmup)
    assert ("scaled with train.epochs" in recipe.origin) == (warmup != 5)


def test_a_warm_up_given_is_never_scaled():
    assert load_recipe("quick", ["train.epochs=8", "meta.warmup_epochs=5"]).meta.warmup_epochs == 5
    with pytest.raises(RecipeError, match="override meta.warmup_epochs=3"):
        load_recipe("quick", ["train.epochs=3", "meta.warmup_epochs=3"])
