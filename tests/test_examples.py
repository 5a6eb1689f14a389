"""Every example runs: each fenced ```python / ```bash block of README.md and each `>>>`
example in the package's docstrings.

One test case per README block and per module with examples (parametrised, so a new
block or module is a new case). They run in one temporary workspace, in this order:

- the quick start first: `python train.py` (the module fixture runs it once, see
  TINY_TRAIN), which leaves `runs/builtin/model.keras` and `savedmodels/builtin/1`
  there for the blocks after it;
- stand-ins, generated (never downloaded): `train_iter_20000.caffemodel` and
  `train_iter_6000.caffemodel` (v2 ResNet-101 and v1 LargeFOV), released layouts (official layer names, reduced
  width, tests/helpers.py); `photos/`, `img.jpg`, `cat.jpg`: built-in val images;
  the built-in dataset for data and training paths; a reduced-width model for
  export and serving.

Documented substitutions (SUBSTITUTIONS below, applied to the example text):
- every `python train.py` / `deeplab-train` run gets TINY_TRAIN appended: the same
  code path (data, LSUV, fit, evaluation, export) at 1/16 width, crop 65 and 4
  steps, since the full 800-step run takes ~3 minutes on 2 cores (its figures are
  in the README);
- `deeplab-convert` gets `--width-multiplier` of the reduced-width stand-in, and
  `load_pretrained(local path)` its `width_multiplier=`;
- exports at `--size 513` run at 65 (`size=513` likewise);
- docstring globals (`_doctest_globals`): `np`, `tf`, `keras`, `build_model`, `model` (a reduced-width
  VGG16-LargeFOV), `voc_dir` (the built-in dataset in the VOC layout), `rgb`,
  `images_uint8`, `logits`, `png_bytes` ... so that an example can name them;
- an example that shows no output only has to run (training and export print
  progress); one that shows output must print it (ELLIPSIS, NORMALIZE_WHITESPACE).

Console scripts and `python SCRIPT.py` lines run in this process through the same
`main` the script calls (`setup.cfg` console_scripts, `runpy` for the scripts), to
spare one TensorFlow start per line; tests/test_user_path.py runs them as real
subprocesses. Skipped, with the reason printed (SKIPS): what needs the internet,
VOC / SBD / CamVid or your own data folder, a GPU, docker / TF Serving, `pip install`
(CI installs exactly that) and `python -m pytest tests` (this suite itself).
"""

import configparser
import contextlib
import doctest
import importlib
import io
import os
import pathlib
import re
import runpy
import shlex
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PACKAGE = ROOT / "deeplab_keras"

TINY_TRAIN = ["--set", "width_multiplier=0.0625", "--set", "crop_size=65", "--batch-size", "2",
              "--steps", "4", "--set", "steps_per_epoch=4", "--set", "checkpoint_every=4",
              "--set", "val_miou_images=0"]
WIDTH = 1 / 16  # tests.test_convert_reference.WIDTH, the stand-in caffemodels' width

# (pattern in the example text, reason): an example (README block line, or docstring
# example) matching one is skipped with that reason.
SKIPS = [
    (r"pip install", "installs packages: CI (.ci/run) installs exactly this"),
    (r"python -m pytest tests", "runs this test suite itself"),
    (r"VOCdevkit|benchmark_RELEASE|voc2012_segmentation|Voc2012Segmentation|manual.dir|"
     r"--tfds|--data-dir \.\.\.", "needs PASCAL VOC 2012 / SBD (not downloadable here)"),
    (r"~/data/(pets|cvat_export|CamVid|camvid)", "needs that dataset folder of your own "
     "(the layouts are tested on generated folders in tests/test_data_custom.py)"),
    (r"load_pretrained\(\"deeplabv2_resnet101_voc\"\)", "downloads a released model (internet)"),
    (r"docker |curl |instances", "needs docker / TF Serving (the request body is "
     "checked against the SavedModel in tests/test_export.py)"),
    (r"--device gpu", "needs a GPU"),
]

# (regex, replacement) on example text, applied in order (see the module docstring).
SUBSTITUTIONS = [
    (r"(python train\.py|deeplab-train)((?: [^#\n]*?)?)(\s*(?:#.*)?)$",
     lambda m: f"{m[1]}{m[2]} {' '.join(TINY_TRAIN)}{m[3]}"),
    (r"(deeplab-convert [^\n#]*?)(\s*(?:#.*)?)$",
     lambda m: f"{m[1]} --width-multiplier {WIDTH}{m[2]}"),
    (r"load_pretrained\(\"/data/(train_iter_20000\.caffemodel)\"\)",
     lambda m: f'load_pretrained("{m[1]}", width_multiplier={WIDTH})'),
    (r"(convert|read_source)\(\"train_iter_20000\.caffemodel\"\)",
     lambda m: f'{m[1]}("train_iter_20000.caffemodel", width_multiplier={WIDTH})'),
    (r"--size 513", lambda m: "--size 65"),
    (r"size=513", lambda m: "size=65"),
    # Docstrings: training runs at TINY size (the same code path); the CRF search is a
    # one-point search on 2 images (the search itself: tests/test_evaluation_evaluate.py).
    (r"\{\"steps\": 100\}", lambda m: '{"steps": 4, **TINY_CONFIG}'),
    (r"\[\"steps=50\", \"output_dir=/tmp/run\"\]",
     lambda m: '["steps=50", "output_dir=runs/doc", *TINY_OVERRIDES]'),
    (r"limit=100\)", lambda m: "limit=2, coarse_points=1, fine_rounds=0)"),
]
TINY_CONFIG = {"width_multiplier": WIDTH, "crop_size": 65, "batch_size": 2, "steps_per_epoch": 4,
               "checkpoint_every": 4, "val_miou_images": 0, "output_dir": "runs/doc-run"}
TINY_OVERRIDES = ["width_multiplier=0.0625", "crop_size=65", "batch_size=2",
                  "checkpoint_every=50", "val_miou_images=0"]


def _skip_reason(text):
    for pattern, reason in SKIPS:
        if re.search(pattern, text):
            return reason
    return None


def _substitute(text):
    lines = []
    for line in text.splitlines():
        for pattern, repl in SUBSTITUTIONS:
            line = re.sub(pattern, repl, line)
        lines.append(line)
    return "\n".join(lines)


# --- README blocks ---------------------------------------------------------------------------

def readme_blocks():
    """[(id, language, code)] of the fenced python / bash blocks, in README order."""
    blocks, text = [], README.read_text()
    for i, m in enumerate(re.finditer(r"^```(python|bash)\n(.*?)^```", text, re.M | re.S)):
        line = text[:m.start()].count("\n") + 1
        blocks.append((f"L{line}-{m[1]}", m[1], m[2]))
    return blocks


BLOCKS = readme_blocks()


def bash_commands(code):
    """The commands of a bash block: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (s.strip() for s in line.split("="))
        out[name] = target
    return out


def run_command(command):
    """Run one shell command line in this process; returns (exit status, output)."""
    argv = shlex.split(command, comments=True)
    scripts = _console_scripts()
    buffer = io.StringIO()
    old_argv = sys.argv
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if argv[0] in scripts:
                module, func = scripts[argv[0]].split(":")
                sys.argv = argv
                status = getattr(importlib.import_module(module), func)()
            elif argv[:2] == ["python", "-m"]:
                sys.argv = [argv[2], *argv[3:]]
                runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
                status = 0
            elif argv[0] == "python" and argv[1].endswith(".py"):
                sys.argv = argv[1:]
                runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
                status = 0
            else:
                raise AssertionError(f"no runner for this README command: {command!r}")
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old_argv
    return status or 0, buffer.getvalue()


# --- the workspace ---------------------------------------------------------------------------

def _write_jpeg(src, dst):
    from PIL import Image

    Image.open(src).convert("RGB").save(dst, quality=92)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The temporary folder every example runs in, with the quick start already run."""
    from deeplab_keras.data import builtin
    from tests.helpers import write_released_caffemodel

    ws = tmp_path_factory.mktemp("examples")
    old = os.getcwd()
    os.chdir(ws)
    try:
        voc_dir = builtin.ensure_builtin()
        jpegs = sorted((pathlib.Path(voc_dir) / "VOC2012" / "JPEGImages").glob("*.jpg"))
        (ws / "photos").mkdir()
        for src in jpegs[:2]:
            _write_jpeg(src, ws / "photos" / src.name)
        _write_jpeg(jpegs[2], ws / "img.jpg")
        _write_jpeg(jpegs[3], ws / "cat.jpg")
        write_released_caffemodel(ws / "train_iter_20000.caffemodel", net="resnet", seed=1)
        write_released_caffemodel(ws / "train_iter_6000.caffemodel", seed=2)
        # model.tflite: a reduced-width model exported at 129x129 (export.checks' example).
        from deeplab_keras.export import export_tflite

        export_tflite(_stand_in_model(), ws / "model.tflite", size=129)
        # The quick start: the first `python train.py` of the README, run once here.
        quick = next(c for _, lang, code in BLOCKS if lang == "bash"
                     for c in bash_commands(code) if c.split("#")[0].strip() == "python train.py")
        status, output = run_command(_substitute(quick))
        yield {"dir": ws, "voc_dir": voc_dir, "quick_start": (quick, status, output)}
    finally:
        os.chdir(old)


@pytest.fixture
def in_workspace(workspace):
    old = os.getcwd()
    os.chdir(workspace["dir"])
    try:
        yield workspace
    finally:
        os.chdir(old)


@pytest.mark.parametrize("block_id,language,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_block_runs(in_workspace, block_id, language, code):
    if language == "python":
        reason = _skip_reason(code)
        if reason:
            pytest.skip(f"README {block_id}: {reason}")
        source = _substitute(code)
        print(f"README {block_id} as run:\n{source}")
        exec(compile(source, f"README.md:{block_id}", "exec"), {"__name__": "__readme__"})
        return
    ran, skipped = [], []
    for command in bash_commands(code):
        reason = _skip_reason(command)
        if reason:
            skipped.append(f"{command!r}: {reason}")
            continue
        if command.split("#")[0].strip() == "python train.py":
            # Run once by the workspace fixture (it is the quick start); checked here.
            _, status, output = in_workspace["quick_start"]
        else:
            status, output = run_command(_substitute(command))
        assert status == 0, f"README {block_id}: {command!r} exited {status}:\n{output[-4000:]}"
        ran.append(command)
    for line in skipped:
        print(f"README {block_id}: skipped {line}")
    if not ran:
        pytest.skip(f"README {block_id}: " + "; ".join(skipped))


def test_quick_start_did_what_the_readme_says(workspace):
    """`python train.py`: generates the data, trains, evaluates (mIoU + per-class table),
    writes runs/builtin/model.keras and exports a SavedModel to savedmodels/."""
    _, status, output = workspace["quick_start"]
    assert status == 0, output[-4000:]
    assert re.search(r"mIoU", output), output[-2000:]
    assert (workspace["dir"] / "runs" / "builtin" / "model.keras").is_file()
    assert list((workspace["dir"] / "savedmodels" / "builtin").glob("*/saved_model.pb"))


def test_readme_has_blocks_of_both_kinds():
    kinds = [lang for _, lang, _ in BLOCKS]
    assert kinds.count("python") >= 3 and kinds.count("bash") >= 5, kinds


# --- docstring examples ----------------------------------------------------------------------

def doc_modules():
    """Dotted names of the package modules whose source holds a `>>>` example."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _stand_in_model():
    """The docstrings' `model`: a reduced-width VGG16-LargeFOV, 21 classes, fixed seed."""
    import keras

    from deeplab_keras.models import build_model

    keras.utils.set_random_seed(0)
    return build_model("vgg16_largefov", num_classes=21, width_multiplier=WIDTH)


class _Checker(doctest.OutputChecker):
    """An example that shows no output is checked to run without error (training and
    export print progress); one that shows output is checked against it."""

    def check_output(self, want, got, optionflags):
        return not want.strip() or super().check_output(want, got, optionflags)


def _doctest_globals(ws):
    import keras
    import tensorflow as tf


    from deeplab_keras.models import build_model

    model = _stand_in_model()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (65, 65, 3)).astype(np.uint8)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(rgb).save(png, format="PNG")
    return {
        "np": np, "tf": tf, "keras": keras,
        "model": model,                      # a reduced-width VGG16-LargeFOV, 21 classes
        "build_model": build_model,
        "voc_dir": ws["voc_dir"],            # the built-in dataset, VOC layout
        "rgb": rgb,                          # one RGB uint8 image [65, 65, 3]
        "images_uint8": tf.constant(rgb[None]),
        "logits": tf.random.normal([1, 9, 9, 21], seed=0),
        "h": 65, "w": 65,
        "png_bytes": png.getvalue(),
        "optimizer": "sgd",
        "TINY_CONFIG": TINY_CONFIG, "TINY_OVERRIDES": TINY_OVERRIDES,
    }


DOC_MODULES = doc_modules()


@pytest.mark.parametrize("module_name", DOC_MODULES)
def test_docstring_examples_run(in_workspace, module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(checker=_Checker(), optionflags=flags)
    base = _doctest_globals(in_workspace)
    skipped, attempted = [], 0
    for test in finder.find(module, module_name, globs={}):
        if test.filename and pathlib.Path(test.filename).resolve() != pathlib.Path(
                module.__file__).resolve():
            continue  # re-exported from another module: tested there
        test.globs = {**vars(module), **base}
        reason = None
        for example in test.examples:
            example.source = _substitute(example.source)
            # Once one example is skipped, the rest of that docstring builds on it.
            reason = (f"follows a skipped example ({reason})" if reason
                      else _skip_reason(example.source))
            if reason:
                example.options[doctest.SKIP] = True
                skipped.append(f"{test.name}: {example.source.strip()!r}: {reason}")
        out = io.StringIO()
        result = runner.run(test, out=out.write, clear_globs=True)
        attempted += result.attempted  # doctest does not count skipped examples
        assert result.failed == 0, f"{test.name}:\n{out.getvalue()[-6000:]}"
    for line in skipped:
        print(f"skipped {line}")
    if not attempted:
        pytest.skip("; ".join(skipped) or f"{module_name}: no examples")


def test_readme_and_docs_links_point_to_files():
    """Every relative link of README.md and docs/*.md names a file of the repository."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not re.match(r"[a-z]+://", target) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
