"""Typed presets: the paper's values, checked overrides, JSON round trip, CLI flag mapping."""

import dataclasses
import json

import pytest

from deeplab_keras.app.train_cli import build_parser, main, resolve_config
from deeplab_keras.training.config import (PRESETS, TrainConfig, apply_overrides, available_presets,
                                           get_preset, register_preset)


def test_registry_holds_the_paper_presets_and_builtin():
    assert available_presets() == ["builtin", "deeplab-v1-largefov", "deeplab-v2-resnet101",
                                   "deeplab-v2-vgg16-aspp-l", "deeplab-v2-vgg16-aspp-s",
                                   "deeplab-v2-vgg16-largefov"]


@pytest.mark.parametrize("name", [n for n in sorted(PRESETS) if n != "builtin"])
def test_common_paper_recipe(name):
    c = get_preset(name)
    assert (c.momentum, c.weight_decay, c.classifier_lr_mult, c.crop_size) == (0.9, 5e-4, 10.0, 321)
    assert (c.min_scale, c.max_scale) == (0.5, 1.5)
    assert c.backbone_weights == "imagenet" and c.train_split == "train_aug"


def test_v1_largefov_recipe():
    c = get_preset("deeplab-v1-largefov")
    assert (c.model, c.batch_size, c.base_lr, c.lr_policy, c.lr_step_size, c.lr_gamma, c.steps) == \
        ("vgg16_largefov", 20, 1e-3, "step", 2000, 0.1, 6000)
    assert not c.msc_training


@pytest.mark.parametrize("name,model", [("deeplab-v2-vgg16-largefov", "vgg16_largefov"),
                                        ("deeplab-v2-vgg16-aspp-s", "vgg16_aspp_s"),
                                        ("deeplab-v2-vgg16-aspp-l", "vgg16_aspp_l")])
def test_v2_vgg_recipes(name, model):
    c = get_preset(name)
    assert (c.model, c.lr_policy, c.lr_power, c.base_lr, c.batch_size, c.steps) == \
        (model, "poly", 0.9, 1e-3, 10, 20000)


def test_v2_resnet101_recipe():
    c = get_preset("deeplab-v2-resnet101")
    assert (c.model, c.batch_size, c.base_lr, c.lr_policy, c.lr_power, c.steps) == \
        ("resnet101_aspp", 10, 2.5e-4, "poly", 0.9, 20000)
    assert c.freeze_bn and c.msc_training and c.msc_scales == (1.0, 0.75, 0.5)


def test_builtin_preset_is_a_small_cpu_run():
    c = get_preset("builtin")
    assert c.backbone_weights is None and c.width_multiplier < 1 and c.export_dir == "savedmodels"
    assert c.steps * c.batch_size * c.crop_size ** 2 < 6000 * 20 * 321 ** 2 / 100


def test_overrides_are_parsed_against_the_field_types():
    c = apply_overrides(get_preset("builtin"), ["steps=6e3", "base_lr=1e-4", "tfds=yes",
                                                "eval_scales=1, 0.75,0.5", "sbd_dir=none"])
    assert (c.steps, c.base_lr, c.tfds) == (6000, 1e-4, True)
    assert c.eval_scales == (1.0, 0.75, 0.5) and c.sbd_dir is None
    with pytest.raises(ValueError, match="either data_dir"):  # two data sources
        apply_overrides(c, ["data_dir=/data/VOCdevkit"])


@pytest.mark.parametrize("item,match", [
    ("stepz=3", "Unknown config key 'stepz'. Did you mean steps"),
    ("steps=1.5", "steps must be of type int"),
    ("steps=0", "steps must be positive"),
    ("batch_size=-2", "batch_size must be positive. Received: batch_size=-2"),
    ("freeze_bn=maybe", "freeze_bn must be of type bool"),
    ("lr_policy=cosine", "lr_policy must be one of"),
    ("momentum=1.0", "momentum must be in"),
    ("msc_scales=0.5,1", "must start with 1.0"),
    ("width_multiplier=0.5", "ImageNet backbone weights need width_multiplier=1.0"),
    ("no_equals_sign", "key=value"),
])
def test_bad_overrides_are_named(item, match):
    base = get_preset("deeplab-v2-resnet101")
    with pytest.raises(ValueError, match=match):
        apply_overrides(base, [item])


def test_json_round_trip(tmp_path):
    c = apply_overrides(get_preset("deeplab-v2-resnet101"), {"output_dir": "runs/x"})
    c.to_json(tmp_path / "config.json")
    again = TrainConfig.from_json(tmp_path / "config.json")
    assert again == c
    data = json.loads((tmp_path / "config.json").read_text())
    data["unknown"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="Unknown config key 'unknown'"):
        TrainConfig.from_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        TrainConfig.from_json(tmp_path / "missing.json")


def test_every_field_is_documented():
    doc = TrainConfig.__doc__
    for f in dataclasses.fields(TrainConfig):
        assert f"{f.name}" in doc, f.name


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_preset(get_preset("builtin"))
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("nope")


def test_cli_flags_map_onto_the_config():
    args = build_parser().parse_args([
        "--preset", "deeplab-v1-largefov", "--data-dir", "/d/VOCdevkit", "--sbd-dir", "/d/sbd",
        "--batch-size", "10", "--steps", "100", "--backbone-weights", "none", "--resume", "never",
        "--export-dir", "out", "--set", "base_lr=0.01"])
    c = resolve_config(args)
    assert (c.data_dir, c.sbd_dir, c.batch_size, c.steps, c.backbone_weights, c.resume) == \
        ("/d/VOCdevkit", "/d/sbd", 10, 100, None, "never")
    assert c.export_dir == "out" and c.base_lr == 0.01
    assert c.output_dir == "runs/deeplab-v1-largefov"
    c = resolve_config(build_parser().parse_args(["--tfds", "--multi-worker", "--no-export", "--no-eval"]))
    assert c.tfds and c.multi_worker and c.export_dir is None and not c.evaluate
    assert c.name == "builtin"


def test_cli_print_config_and_list(capsys):
    assert main(["--print-config", "--steps", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 7
    assert main(["--list-presets"]) == 0
    assert "deeplab-v2-resnet101" in capsys.readouterr().out
