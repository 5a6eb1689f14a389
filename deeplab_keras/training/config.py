"""Typed training configuration: one dataclass, named presets, checked overrides.

Every field of `TrainConfig` is read by the trainer (`deeplab_keras.training.trainer`);
a preset is a `TrainConfig` instance in the explicit registry `PRESETS`. Command-line
overrides (`key=value` strings) are parsed against the field types, so an unknown key
or a value of the wrong type is refused with a message naming it, before TensorFlow
is even imported.

The paper presets follow DeepLab v1 (Chen et al., ICLR 2015, Sec. 4.1) and v2
(Chen et al., TPAMI 2017, Sec. 4): SGD with momentum 0.9, weight decay 5e-4,
10x learning rate on the classifier, crop 321, v1 "step" and v2 "poly" schedules.
The `builtin` preset is a reduced recipe that trains on the synthetic built-in
dataset on a 2-core CPU in minutes; its docstring says what differs and why.

Example:
    >>> cfg = get_preset("deeplab-v1-largefov")
    >>> cfg = apply_overrides(cfg, ["batch_size=10", "steps=100"])
    >>> cfg.batch_size, cfg.steps, cfg.lr_policy
    (10, 100, 'step')
"""

import dataclasses
import difflib
import json
import typing
from pathlib import Path

from deeplab_keras.data import builtin as _builtin
from deeplab_keras.data import custom as _custom
from deeplab_keras.training.values import check_type, coerce

LR_POLICIES = ("step", "poly")
INITS = ("keras", "lsuv")
RESUME_MODES = ("auto", "require", "never")
MIXED_PRECISIONS = ("float16", "bfloat16")  # Keras mixed_float16 / mixed_bfloat16


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Field groups: model, data, optimiser,
    run bookkeeping, evaluation/export after training.

    Attributes:
      name: preset name, used for the default output directory `runs/<name>`.
      model: a `deeplab_keras.models.available_models()` name.
      num_classes: classes including background (21 for VOC). With your own data
        (`data_dir` in a layout of `deeplab_keras.data.custom`) the dataset's
        class count is used when this is left at the preset's value; any other
        value that differs from the dataset's is an error.
      width_multiplier: conv width factor (1.0 = the paper's network).
      freeze_bn: keep BatchNorm at its ImageNet statistics (ResNet-101, batch 10).
      dropout: dropout rate after fc6/fc7 (VGG heads).
      backbone_weights: "imagenet", a weights file, or None (random init).
      init: how a network without backbone weights starts: "keras" (the layers'
        own initialisers) or "lsuv" (those, then each conv kernel rescaled so its
        output has unit variance on a training batch; Mishkin & Matas, "All you
        need is a good init", ICLR 2016). Ignored with backbone_weights.
      msc_training: train with multi-scale inputs and one loss per scale plus the
        max-fused output (v2: 4 losses).
      msc_scales: the MSC input scales, scale 1.0 first.
      data_dir: VOCdevkit directory (containing VOC2012/), or a folder of your
        own images and masks (images/ + masks/, a VOC-like labelling-tool
        export, CamVid; `deeplab_keras.data.custom`); None: the built-in data
        (or TFDS with `tfds`).
      ignore_value: the pixel value of your own index masks that means "ignore"
        (255), or None. VOCdevkit labels always use 255.
      unknown_color: "error" or "ignore": mask colours/values of your own data
        that are not in its class table.
      ignore_classes: class-table names (case-insensitive) whose pixels are
        ignored (label 255) instead of trained, e.g. void, unlabelled.
      class_weights: loss weights per class: "none", "inverse_frequency",
        "median_frequency" (from the training split's class-frequency table of
        your own data), or a comma-separated list of num_classes numbers.
      sbd_dir: SBD `benchmark_RELEASE` directory, for the train_aug split.
      tfds: read the TFDS builder `voc2012_segmentation` instead of files.
      tfds_data_dir: TFDS data_dir (None: the TFDS default).
      tfds_manual_dir: where the VOC / SBD archives are for preparing the TFDS
        builder (None: TFDS's manual dir).
      cache_data: keep decoded training images in memory (small datasets only).
      train_split: "train", "train_aug", "trainval", ...
      val_split: split evaluated after training.
      crop_size: square training crop (321 in the papers).
      min_scale, max_scale: random scaling range of the augmentation.
      batch_size: global batch, split evenly across replicas.
      steps: SGD iterations.
      base_lr: learning rate of the backbone at iteration 0.
      lr_policy: "step" (x lr_gamma every lr_step_size iterations, v1) or
        "poly" ((1 - it/steps) ** lr_power, v2).
      lr_step_size, lr_gamma: the step policy.
      lr_power: the poly policy's power (0.9).
      momentum: SGD momentum.
      weight_decay: L2 weight decay on conv/dense kernels (not biases, not BN).
      classifier_lr_mult: learning-rate factor of `classifier_layers(model)`.
      seed: seeds weights init, augmentation and dropout.
      output_dir: run directory (checkpoints, logs, config.json); None: runs/<name>.
      checkpoint_every: steps between checkpoints (one is also written at the end).
      keep_checkpoints: how many recent checkpoints to keep on disk.
      steps_per_epoch: steps per Keras "epoch" (one progress bar, one CSV row).
      val_miou_images: after every epoch, the mIoU on the first N images of
        `val_split`, logged as `val_miou` (CSV log, TensorBoard); 0 = off.
      image_summary_every: every N steps, TensorBoard image summaries of the
        first `image_summary_images` val images (image | prediction | ground
        truth) under `<run>/logs/images`; 0 = off.
      image_summary_images: how many val images those summaries show.
      resume: "auto" (continue from the latest checkpoint if there is one),
        "require" (fail without one) or "never" (fail if one exists).
      multi_worker: MultiWorkerMirroredStrategy from TF_CONFIG instead of
        MirroredStrategy over the local GPUs.
      mixed_precision: None (float32), "float16" or "bfloat16": the Keras
        `mixed_*` policy for the training network (logits, loss, softmax, CRF,
        BN statistics and the weights stay float32; float16 adds dynamic loss
        scaling). The saved and exported inference network is float32.
      accumulate: micro-batches per SGD step (Caffe's iter_size): batch_size
        stays the effective batch and is split into `accumulate` forward /
        backward passes whose gradients are summed before one update
        (`deeplab_keras.training.accumulation`). batch_size must be a multiple
        of accumulate x replicas.
      jit_compile: compile the training step with XLA (`model.compile(jit_compile=True)`).
      evaluate: evaluate on `val_split` after training.
      eval_scales: inference scales for that evaluation ((1.0,) = single scale).
      eval_flip: also average the horizontally flipped prediction.
      export_dir: where to export a SavedModel after training; None: no export.
    """

    name: str = "custom"
    # Model
    model: str = "vgg16_largefov"
    num_classes: int = 21
    width_multiplier: float = 1.0
    freeze_bn: bool = True
    dropout: float = 0.5
    backbone_weights: typing.Optional[str] = "imagenet"
    init: str = "keras"
    msc_training: bool = False
    msc_scales: typing.Tuple[float, ...] = (1.0, 0.75, 0.5)
    # Data
    data_dir: typing.Optional[str] = None
    sbd_dir: typing.Optional[str] = None
    ignore_value: typing.Optional[int] = 255
    unknown_color: str = "error"
    ignore_classes: typing.Tuple[str, ...] = _custom.DEFAULT_IGNORE_CLASSES
    class_weights: str = "none"
    tfds: bool = False
    tfds_data_dir: typing.Optional[str] = None
    tfds_manual_dir: typing.Optional[str] = None
    cache_data: bool = False
    train_split: str = "train_aug"
    val_split: str = "val"
    crop_size: int = 321
    min_scale: float = 0.5
    max_scale: float = 1.5
    # Optimiser and schedule
    batch_size: int = 20
    steps: int = 6000
    base_lr: float = 1e-3
    lr_policy: str = "step"
    lr_step_size: int = 2000
    lr_gamma: float = 0.1
    lr_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 5e-4
    classifier_lr_mult: float = 10.0
    # Run bookkeeping
    seed: int = 0
    output_dir: typing.Optional[str] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    steps_per_epoch: int = 100
    val_miou_images: int = 0
    image_summary_every: int = 0
    image_summary_images: int = 3
    resume: str = "auto"
    multi_worker: bool = False
    mixed_precision: typing.Optional[str] = None
    accumulate: int = 1
    jit_compile: bool = False
    # After training
    evaluate: bool = True
    eval_scales: typing.Tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    export_dir: typing.Optional[str] = None

    def __post_init__(self):
        validate(self)

    @property
    def run_dir(self):
        """The output directory as a Path (`runs/<name>` unless set)."""
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_dict(self):
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def to_json(self, path):
        """Write the resolved config to `path` atomically (temp file + rename)."""
        from deeplab_keras.utils.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, values):
        """Inverse of `to_dict`, with the same checks as the overrides."""
        if not isinstance(values, dict):
            raise ValueError(f"A config must be a JSON object. Received: {type(values).__name__}")
        _check_keys(values)
        hints = _field_types()
        return cls(**{k: coerce(k, v, hints[k]) for k, v in values.items()})

    @classmethod
    def from_json(cls, path):
        """Read a config written by `to_json`."""
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"No config file at {path}") from None
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(values)


def _field_types():
    return typing.get_type_hints(TrainConfig)


def _positive(cfg, *names):
    for key in names:
        value = getattr(cfg, key)
        if value <= 0:
            raise ValueError(f"{key} must be positive. Received: {key}={value!r}")


def validate(cfg):
    """Check the values of a `TrainConfig` (types are checked on construction by
    `values.coerce` for overrides; here, ranges and choices). Raises ValueError naming
    the field and the value."""
    hints = _field_types()
    for f in dataclasses.fields(cfg):
        check_type(f.name, getattr(cfg, f.name), hints[f.name])
    _positive(cfg, "num_classes", "width_multiplier", "crop_size", "batch_size", "steps",
              "base_lr", "lr_step_size", "lr_gamma", "lr_power", "classifier_lr_mult",
              "checkpoint_every", "keep_checkpoints", "steps_per_epoch", "min_scale",
              "max_scale")
    if cfg.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2. Received: num_classes={cfg.num_classes}")
    if cfg.num_classes > 255:
        raise ValueError("num_classes must be <= 255 (label 255 means 'ignore'). "
                         f"Received: num_classes={cfg.num_classes}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={cfg.dropout}")
    if not 0.0 <= cfg.momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1). Received: momentum={cfg.momentum}")
    if cfg.weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0. Received: weight_decay={cfg.weight_decay}")
    if cfg.min_scale > cfg.max_scale:
        raise ValueError("min_scale must be <= max_scale. Received: "
                         f"min_scale={cfg.min_scale}, max_scale={cfg.max_scale}")
    if cfg.lr_policy not in LR_POLICIES:
        raise ValueError(f"lr_policy must be one of {LR_POLICIES}. Received: lr_policy={cfg.lr_policy!r}")
    if cfg.init not in INITS:
        raise ValueError(f"init must be one of {INITS}. Received: init={cfg.init!r}")
    if cfg.resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}. Received: resume={cfg.resume!r}")
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0. Received: seed={cfg.seed}")
    if cfg.image_summary_every < 0 or cfg.image_summary_images < 1:
        raise ValueError("image_summary_every must be >= 0 (0 = off) and image_summary_images "
                         f">= 1. Received: image_summary_every={cfg.image_summary_every}, "
                         f"image_summary_images={cfg.image_summary_images}")
    if cfg.val_miou_images < 0:
        raise ValueError("val_miou_images must be >= 0 (0 = off). "
                         f"Received: val_miou_images={cfg.val_miou_images}")
    for key in ("msc_scales", "eval_scales"):
        scales = getattr(cfg, key)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"{key} must be a non-empty list of positive scales. Received: {key}={scales}")
    if cfg.msc_training and cfg.msc_scales[0] != 1.0:
        raise ValueError(f"msc_scales must start with 1.0 (the scale the fused logits live at). "
                         f"Received: msc_scales={cfg.msc_scales}")
    if cfg.ignore_value is not None and not 0 <= cfg.ignore_value <= 255:
        raise ValueError(f"ignore_value must be in [0, 255] or none. "
                         f"Received: ignore_value={cfg.ignore_value}")
    if cfg.unknown_color not in _custom.UNKNOWN_COLOR_MODES:
        raise ValueError(f"unknown_color must be one of {_custom.UNKNOWN_COLOR_MODES}. "
                         f"Received: unknown_color={cfg.unknown_color!r}")
    # The length of a list is checked against the resolved num_classes (your own
    # data's count is known only once its folder is read): trainer.check_data.
    _custom.parse_class_weights(cfg.class_weights)
    if cfg.tfds and cfg.data_dir:
        raise ValueError("Give either data_dir (VOCdevkit files) or tfds=true, not both. "
                         f"Received: data_dir={cfg.data_dir!r}, tfds=True")
    if cfg.mixed_precision not in MIXED_PRECISIONS + (None,):
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISIONS} or none. "
                         f"Received: mixed_precision={cfg.mixed_precision!r}")
    if cfg.accumulate < 1 or cfg.batch_size % cfg.accumulate:
        raise ValueError("accumulate must be >= 1 and divide batch_size (the effective batch). "
                         f"Received: accumulate={cfg.accumulate}, batch_size={cfg.batch_size}")
    if cfg.backbone_weights == "imagenet" and cfg.width_multiplier != 1.0:
        raise ValueError("ImageNet backbone weights need width_multiplier=1.0. Received: "
                         f"width_multiplier={cfg.width_multiplier}, backbone_weights='imagenet' "
                         "(pass backbone_weights=none)")


def _check_keys(keys):
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(names)}")


def apply_overrides(cfg, overrides):
    """Return `cfg` with `key=value` overrides applied and checked.

    Args:
      cfg: a `TrainConfig`.
      overrides: iterable of "key=value" strings, or a dict {key: value}; values
        are parsed against the field's type ("none" for optional fields, comma
        lists for tuples, true/false for booleans).

    Returns:
      A new `TrainConfig` (validated).

    Raises:
      ValueError: unknown key (with the closest valid keys), malformed item,
        a value of the wrong type, or an out-of-range value.
    """
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"Overrides are 'key=value' strings. Received: {item!r}")
            key, value = item.split("=", 1)
            items.append((key.strip(), value))
    _check_keys([k for k, _ in items])
    hints = _field_types()
    changes = {k: coerce(k, v, hints[k]) for k, v in items}
    return dataclasses.replace(cfg, **changes)


# ---------------------------------------------------------------------------
# The registry of named presets.

PRESETS = {}


def register_preset(cfg):
    """Add a `TrainConfig` to `PRESETS` under `cfg.name` (names are unique)."""
    if cfg.name in PRESETS:
        raise ValueError(f"Preset {cfg.name!r} is already registered.")
    PRESETS[cfg.name] = cfg
    return cfg


def available_presets():
    """Sorted preset names."""
    return sorted(PRESETS)


def get_preset(name):
    """The `TrainConfig` registered as `name`.

    Raises:
      ValueError: unknown name (the message lists the presets).
    """
    if name not in PRESETS:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown preset {name!r}.{hint} Available presets: "
                         f"{', '.join(available_presets())}")
    return PRESETS[name]


# DeepLab v1 LargeFOV (ICLR 2015, Sec. 4.1): batch 20, lr 1e-3 (x10 on fc8),
# x0.1 every 2000 iterations, 6000 iterations, ImageNet VGG16.
register_preset(TrainConfig(
    name="deeplab-v1-largefov", model="vgg16_largefov", batch_size=20, steps=6000,
    base_lr=1e-3, lr_policy="step", lr_step_size=2000, lr_gamma=0.1))

# DeepLab v2 VGG16 models (TPAMI 2017, Sec. 4.1, Table 1 best setting): "poly"
# with power 0.9, batch 10, 20K iterations, lr 1e-3.
for _name, _model in (("deeplab-v2-vgg16-largefov", "vgg16_largefov"),
                      ("deeplab-v2-vgg16-aspp-s", "vgg16_aspp_s"),
                      ("deeplab-v2-vgg16-aspp-l", "vgg16_aspp_l")):
    register_preset(TrainConfig(
        name=_name, model=_model, batch_size=10, steps=20000, base_lr=1e-3,
        lr_policy="poly", lr_power=0.9, checkpoint_every=2000))

# DeepLab v2 ResNet-101 (TPAMI 2017, Sec. 4.3; deeplab-pytorch): batch 10,
# lr 2.5e-4, poly 0.9, 20K iterations, frozen BN, MSC training with 4 losses.
register_preset(TrainConfig(
    name="deeplab-v2-resnet101", model="resnet101_aspp", batch_size=10, steps=20000,
    base_lr=2.5e-4, lr_policy="poly", lr_power=0.9, freeze_bn=True, dropout=0.0,
    msc_training=True, msc_scales=(1.0, 0.75, 0.5), checkpoint_every=2000,
    eval_scales=(1.0, 0.75, 0.5)))

# The default of `python train.py`: the built-in synthetic dataset on a CPU, in
# minutes. What differs from the paper recipe, and why:
# - width_multiplier 0.25 (1/16 of the FLOPs) and random init: ImageNet weights
#   cannot be downloaded here, and a full VGG16 at 321x321 trains at well under
#   one image per second on 2 CPU cores (benchmarks/results/training.md).
# - init "lsuv": from random init a plain 15-layer VGG spends hundreds of SGD steps
#   predicting class priors; unit-variance rescaled kernels leave that plateau in
#   about a hundred (400 steps: val mIoU 0.81 with LSUV at lr 3e-3, 0.64 without
#   it at lr 1e-2).
# - crop 129, batch 8, 800 steps, base_lr 3e-3 (poly): the scenes are 160-240 px
#   wide and the whole run (data, training, evaluation, export) must fit in 5
#   minutes on a 2-core AVX2 CPU (a step is ~0.3 s there with the native dilated
#   convs of `models.atrous`; benchmarks/results/models.md); LSUV-scaled networks
#   diverge at 1e-2. With the Caffe-exact LargeFOV (pool5a) 400 steps gave val mIoU
#   0.737 and 800 steps 0.824 (3 min 36 s on the AMD EPYC, idle, data already generated).
# - dropout 0: an 800-step run on 300 images is not in the over-fitting regime.
# Everything else (SGD momentum 0.9, weight decay 5e-4 on kernels, 10x on fc8,
# poly power 0.9, stride-8 loss with 255 ignored) is the paper's.
register_preset(TrainConfig(
    name="builtin", model="vgg16_largefov", num_classes=_builtin.NUM_CLASSES,
    width_multiplier=0.25, backbone_weights=None, init="lsuv", dropout=0.0,
    train_split="train", val_split="val", cache_data=True, crop_size=129, batch_size=8,
    steps=800, base_lr=3e-3, lr_policy="poly", checkpoint_every=200, steps_per_epoch=50,
    val_miou_images=25, export_dir="savedmodels"))
