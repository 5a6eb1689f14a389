"""Every kind of saved model loads the Keras way after `import deeplab_keras`.

Keras's convention (as in keras-hub): importing the package registers its
serializable classes, so in a fresh process

    import deeplab_keras, keras
    keras.models.load_model(path, compile=False)

must work, with nothing else imported first. The kinds: the `.keras` the trainer
writes (`python train.py`'s save path, tiny size and steps), a compiled training
model (DeepLabSGD + PolyDecay + SegmentationCrossEntropy, loaded with
compile=True), `deeplab-convert` and `load_pretrained` of a generated
released-layout caffemodel, a model with `DenseCRF` in it, an MSC model and a
mixed_bfloat16 model. All are built once (module fixture) and loaded in ONE
subprocess; its outputs are compared with the original models' here.
"""

import ast
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.helpers import write_released_caffemodel

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "deeplab_keras"
HW = (49, 65)  # odd, non-square: 7x9 logits for the VGG nets

# What the fresh process runs, per kind: exactly the documented call, then one forward pass.
LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import deeplab_keras, keras

    spec = json.loads(sys.argv[1])
    report = {}
    for kind, item in spec.items():
        model = keras.models.load_model(item["path"], compile=item["compile"])
        x = np.load(item["input"])
        np.save(item["output"], keras.ops.convert_to_numpy(model(x)).astype("float32"))
        entry = {"layers": sorted({type(l).__name__ for l in model._flatten_layers()})}
        if item["compile"]:
            opt = model.optimizer
            entry.update(optimizer=type(opt).__name__,
                         schedule=type(opt._learning_rate).__name__,
                         iterations=int(opt.iterations.numpy()),
                         loss=type(model.loss).__name__)
        report[kind] = entry
    report["unregistered"] = [c for c in json.loads(sys.argv[2])
                              if keras.saving.get_registered_object("deeplab_keras>" + c) is None]
    # Nothing beyond the registration modules was needed for any of it.
    report["modules"] = sorted(m for m in sys.modules if m.startswith("deeplab_keras"))
    print("REPORT " + json.dumps(report))
""")


def _tiny(num_classes=21, seed=0):
    import keras

    from deeplab_keras.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model("vgg16_largefov", num_classes=num_classes, width_multiplier=0.0625)


def _images(seed, rgb=False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (1, *HW, 3)).astype("float32")
    return x if rgb else x - 120.0


def _build_all(tmp):
    """{kind: (path, input, compile, expected output)}."""
    import keras

    from deeplab_keras.convert import cli as convert_cli
    from deeplab_keras.crf import DenseCRF
    from deeplab_keras.models import ResizeLogits, load_pretrained, wrap_msc
    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.losses import SegmentationCrossEntropy
    from deeplab_keras.training.optimizer import make_optimizer
    from deeplab_keras.training.schedules import PolyDecay
    from deeplab_keras.training.trainer import train

    kinds = {}

    def add(kind, model, path, x, compile=False):
        if not path.exists():
            model.save(path)
        kinds[kind] = (path, x, compile, keras.ops.convert_to_numpy(model(x)))

    # 1. `python train.py`'s save path: the trainer's model.keras (tiny width, crop, steps).
    config = apply_overrides(get_preset("builtin"), dict(
        width_multiplier=0.0625, crop_size=65, batch_size=2, steps=2, steps_per_epoch=2,
        checkpoint_every=2, val_miou_images=0, output_dir=str(tmp / "run"), evaluate=False,
        export_dir=None))
    result = train(config, verbose=0)
    path = result.run_dir / "model.keras"
    add("train", keras.models.load_model(path), path, _images(1))

    # 2. A compiled training model: the optimizer, schedule and loss the trainer uses.
    model = _tiny(num_classes=6, seed=2)
    model.compile(optimizer=make_optimizer(model, PolyDecay(1e-3, 100)),
                  loss=SegmentationCrossEntropy())
    labels = np.random.default_rng(2).integers(0, 6, (2, 7, 9)).astype("int32")
    labels[0, :2] = 255
    model.train_on_batch(np.concatenate([_images(2), _images(3)]), labels)
    add("compiled", model, tmp / "compiled.keras", _images(4), compile=True)

    # 3. deeplab-convert of a generated released-layout caffemodel (v1 LargeFOV, V1 format).
    src, width = write_released_caffemodel(tmp / "train_iter_6000.caffemodel", seed=5)
    path = tmp / "converted.keras"
    assert convert_cli.main([str(src), "--output", str(path),
                             "--width-multiplier", str(width)]) == 0
    add("convert", keras.models.load_model(path), path, _images(5))

    # 4. load_pretrained with a local path (v2 ASPP-L, new format), saved by the user.
    src, width = write_released_caffemodel(tmp / "train_iter_20000.caffemodel", net="aspp_l",
                                           seed=6)
    add("pretrained", load_pretrained(src, width_multiplier=width), tmp / "pretrained.keras",
        _images(6))

    # 5. A model with the dense CRF in it: RGB in, CRF probabilities at image resolution out.
    base = _tiny(seed=7)
    rgb = keras.Input((None, None, 3))
    logits = base(keras.layers.Rescaling(1.0, offset=-120.0)(rgb))
    full = ResizeLogits()([logits, rgb])
    probs = DenseCRF(iterations=3, bilateral_spatial_sigma=10.0)(rgb, full)
    add("crf", keras.Model(rgb, probs), tmp / "crf.keras", _images(7, rgb=True))

    # 6. MSC (scales 1, 0.75, 0.5, max fusion) around a single-scale net.
    add("msc", wrap_msc(_tiny(seed=8)), tmp / "msc.keras", _images(8))

    # 7. Mixed precision: built and saved under mixed_bfloat16.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _tiny(seed=9)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    add("bf16", model, tmp / "bf16.keras", _images(9))
    return kinds


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saved")
    kinds = _build_all(tmp)
    spec = {}
    for kind, (path, x, compile, _) in kinds.items():
        np.save(tmp / f"{kind}_in.npy", x)
        spec[kind] = {"path": str(path), "input": str(tmp / f"{kind}_in.npy"),
                      "output": str(tmp / f"{kind}_out.npy"), "compile": compile}
    classes = [name for _, name in _decorated_classes()]
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(spec), json.dumps(classes)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])
    outputs = {kind: np.load(spec[kind]["output"]) for kind in kinds}
    return kinds, outputs, report


KINDS = ["train", "compiled", "convert", "pretrained", "crf", "msc", "bf16"]


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_process_load_gives_the_same_outputs(loaded, kind):
    kinds, outputs, _ = loaded
    expected = kinds[kind][3]
    got = outputs[kind]
    assert got.shape == expected.shape and np.all(np.isfinite(got))
    scale = float(np.max(np.abs(expected)))
    if kind == "bf16":
        # Same bfloat16 kernels on the same inputs and weights; the float32 logits
        # layer reads bfloat16 activations, so allow a few bfloat16 ulps (2^-8 relative).
        tol = 4 * 2.0 ** -8 * scale
    else:
        # Same weights, same float32 ops; only the summation order may differ between
        # processes: eps (1.2e-7) x ~1e3 terms in the deepest sums (fc6: 3x3x64 taps,
        # CRF: 3 iterations over the lattice) gives ~1e-4 relative; 1e-5 holds here.
        tol = 1e-5 * scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_each_kind_holds_the_classes_it_is_about(loaded):
    _, _, report = loaded
    assert "AtrousConv2D" in report["convert"]["layers"]
    assert "AtrousConv2D" in report["pretrained"]["layers"]
    assert "DenseCRF" in report["crf"]["layers"] and "ResizeLogits" in report["crf"]["layers"]
    assert {"ScaleImage", "ResizeLogits", "Maximum"} <= set(report["msc"]["layers"])


def test_compiled_model_restores_optimizer_schedule_and_loss(loaded):
    _, _, report = loaded
    entry = report["compiled"]
    assert entry["optimizer"] == "DeepLabSGD" and entry["schedule"] == "PolyDecay"
    assert entry["loss"] == "SegmentationCrossEntropy"
    assert entry["iterations"] == 1  # the optimizer state came back, not a fresh optimizer


def test_loading_needed_no_heavy_submodule(loaded):
    """`import deeplab_keras` + load_model imports neither export nor evaluation,
    predict or the command lines (the registration modules are enough)."""
    _, _, report = loaded
    for heavy in ("deeplab_keras.export", "deeplab_keras.evaluation", "deeplab_keras.predict",
                  "deeplab_keras.app"):
        assert not [m for m in report["modules"] if m == heavy or m.startswith(heavy + ".")]


def _decorated_classes():
    """(module, class name) of every `@...register_keras_serializable(...)` class in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    "register_keras_serializable" in ast.unparse(d) for d in node.decorator_list):
                module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
                found.append((module, node.name))
    return found


def test_import_registers_every_serializable_class(loaded):
    """Each decorated class in the source is registered in the fresh process right after
    `import deeplab_keras` (a new one in a module missing from
    `deeplab_keras.REGISTRATION_MODULES` fails here)."""
    classes = _decorated_classes()
    assert len(classes) >= 8, classes
    assert loaded[2]["unregistered"] == []
