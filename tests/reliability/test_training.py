"""Reliability of training and evaluation (issue 8): bad configs, paths and numbers get a
clear answer; killed runs lose nothing.

Policy under test:
- Config mistakes (unknown preset or key, wrong type, non-positive batch / steps,
  missing TF_CONFIG) are refused before any work, naming the value; the CLIs exit 2.
- A checkpoint is only loaded into the network it was written by: another
  num_classes / architecture / width is refused naming the file and the first
  differing variable; a run directory is only resumed with the same network.
- An all-ignore batch trains to loss 0 with zero gradients (only weight decay acts);
  a diverging run stops with a message naming the step and the last good
  checkpoint, which is kept (nothing non-finite is ever checkpointed).
- Checkpoints are written to a temporary name and renamed: a kill at any moment
  leaves complete checkpoints only; a killed run resumes at its last checkpoint
  with its optimizer state (momentum, step, hence the schedule position).
- Evaluation over files reports the ones that fail and evaluates the rest.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from deeplab_keras.data import builtin
from deeplab_keras.training import apply_overrides, get_preset
from deeplab_keras.training import callbacks as cb
from deeplab_keras.app.train_cli import build_parser, main, resolve_config

REPO = Path(__file__).resolve().parents[2]
TINY = dict(width_multiplier=0.0625, crop_size=65, batch_size=2, steps_per_epoch=2,
            evaluate=False, export_dir=None)
TINY_FLAGS = ["--set", "width_multiplier=0.0625", "--set", "crop_size=65", "--set", "batch_size=2",
              "--set", "steps_per_epoch=5", "--no-eval", "--no-export"]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def tiny_config(output_dir, **changes):
    return apply_overrides(get_preset("builtin"), {**TINY, "output_dir": str(output_dir), **changes})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step tiny run on the built-in data: its directory and config."""
    from deeplab_keras.training.trainer import train

    run_dir = tmp_path_factory.mktemp("run")
    result = train(tiny_config(run_dir, steps=2, checkpoint_every=2), verbose=0)
    return run_dir, result.config


class TestConfigs:
    def test_unknown_preset_lists_the_presets(self, capsys):
        assert main(["--preset", "deeplab-v3-plus"]) == 2
        err = capsys.readouterr().err
        assert "Unknown preset 'deeplab-v3-plus'" in err and "deeplab-v1-largefov" in err

    @pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--batch-size", "-4"),
                                            ("--steps", "0"), ("--steps", "-10")])
    def test_non_positive_batch_size_or_steps(self, capsys, flag, value):
        assert main([flag, value]) == 2
        key = flag[2:].replace("-", "_")
        assert f"{key} must be positive. Received: {key}={value}" in capsys.readouterr().err

    def test_unknown_config_key_suggests_the_closest(self, capsys):
        assert main(["--set", "base_lrate=0.1"]) == 2
        assert "Unknown config key 'base_lrate'. Did you mean base_lr" in capsys.readouterr().err

    def test_value_of_the_wrong_type(self, capsys):
        assert main(["--steps", "ten"]) == 2
        assert "steps must be of type int. Received: steps='ten'" in capsys.readouterr().err

    def test_multi_worker_without_tf_config(self, monkeypatch):
        from deeplab_keras.training.strategy import make_strategy

        monkeypatch.delenv("TF_CONFIG", raising=False)
        with pytest.raises(ValueError, match="TF_CONFIG"):
            make_strategy(multi_worker=True)
        monkeypatch.setenv("TF_CONFIG", "{not json")
        with pytest.raises(ValueError, match="not valid JSON"):
            make_strategy(multi_worker=True)

    def test_num_classes_not_matching_the_checkpoint(self, trained_run):
        from deeplab_keras.training.trainer import load_checkpoint_model, train

        run_dir, config = trained_run
        ckpt = cb.latest_checkpoint(run_dir)[1]
        other = apply_overrides(config, {"num_classes": 4, "data_dir": str(builtin.ensure_builtin())})
        with pytest.raises(ValueError, match=r"does not fit this model.*fc8/kernel has shape "
                                             r"\(1, 1, 64, 4\) in this model but \(1, 1, 64, 6\)"):
            load_checkpoint_model(other, ckpt)
        with pytest.raises(ValueError, match="num_classes: checkpoint 6 vs now 4"):
            train(other, verbose=0)  # resuming the run with another head

    def test_checkpoint_of_another_architecture(self, trained_run, capsys):
        from deeplab_keras.training.trainer import load_checkpoint_model

        run_dir, config = trained_run
        ckpt = cb.latest_checkpoint(run_dir)[1]
        with pytest.raises(ValueError, match=f"Checkpoint {ckpt} does not fit this model \\(vgg16_aspp_s"):
            load_checkpoint_model(apply_overrides(config, {"model": "vgg16_aspp_s"}), ckpt)
        # The same through deeplab-evaluate: exit 2 and one readable line.
        from deeplab_keras.app.evaluate_cli import main as evaluate_main

        assert evaluate_main(["--checkpoint", str(ckpt), "--preset", "builtin", "--set",
                              "width_multiplier=0.125"]) == 2
        err = capsys.readouterr().err
        assert "does not fit this model" in err and len(err) < 600

    def test_resume_never_refuses_a_directory_with_checkpoints(self, trained_run):
        from deeplab_keras.training.trainer import train

        run_dir, config = trained_run
        with pytest.raises(FileExistsError, match="already holds checkpoints"):
            train(apply_overrides(config, {"resume": "never"}), verbose=0)

    def test_resume_require_without_checkpoint(self, tmp_path):
        from deeplab_keras.training.trainer import train

        with pytest.raises(FileNotFoundError, match="has no checkpoint"):
            train(tiny_config(tmp_path / "fresh", steps=2, resume="require"), verbose=0)


class TestNumbers:
    def test_all_ignore_label_batch_gives_zero_loss_and_only_weight_decay(self):
        from deeplab_keras.models import build_model
        from deeplab_keras.training.losses import SegmentationCrossEntropy
        from deeplab_keras.training.optimizer import make_optimizer

        keras.utils.set_random_seed(0)
        model = build_model("vgg16_largefov", num_classes=3, width_multiplier=0.0625, dropout=0.0)
        lr, wd = 0.1, 5e-4
        opt = make_optimizer(model, lr, weight_decay=wd)
        model.compile(opt, SegmentationCrossEntropy(), jit_compile=False)
        before = {v.path: v.numpy().copy() for v in model.trainable_variables}
        x = np.random.default_rng(0).normal(size=(2, 33, 33, 3)).astype(np.float32) * 50
        loss = model.train_on_batch(x, np.full((2, 33, 33), 255, np.int32))
        assert loss == 0.0
        for v in model.trainable_variables:  # gradients are exactly 0: only L2 decay moves weights
            mult = 10.0 if v.path.startswith("fc8/") else 1.0
            factor = 1 - lr * mult * wd if v.path.endswith("/kernel") else 1.0
            np.testing.assert_allclose(v.numpy(), before[v.path] * factor, rtol=1e-6, atol=1e-9)

    def test_diverging_learning_rate_stops_and_keeps_the_last_good_checkpoint(self, tmp_path, capsys):
        # lr 1e-2 for 4 steps, then x1e8: the run blows up after its step-4 checkpoint.
        run_dir = tmp_path / "run"
        argv = ["--output-dir", str(run_dir), "--steps", "16", "--checkpoint-every", "2",
                "--set", "lr_policy=step", "--set", "lr_step_size=4", "--set", "lr_gamma=1e8",
                "--set", "base_lr=0.01", *TINY_FLAGS]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Training diverged at step" in err and "it is kept" in err
        diverged_at = int(err.split("diverged at step ")[1].split(":")[0])
        saved = cb.list_checkpoints(run_dir)
        assert saved and saved[-1][0] < diverged_at and saved[-1][0] >= 4
        assert str(saved[-1][1]) in err
        from deeplab_keras.training.trainer import load_checkpoint_model

        model = load_checkpoint_model(resolve_config(build_parser().parse_args(argv)), saved[-1][1])
        assert cb.weights_are_finite(model)
        assert not (run_dir / "model.keras").exists()  # no final model from a diverged run


class TestPaths:
    def test_unwritable_output_dir(self, tmp_path, capsys):
        blocker = tmp_path / "a_file"
        blocker.write_text("not a directory")
        assert main(["--output-dir", str(blocker / "run"), *TINY_FLAGS]) == 2
        assert f"Output directory {blocker / 'run'} is not writable" in capsys.readouterr().err
        if os.geteuid() != 0:  # root writes anywhere; the read-only case needs a normal user
            ro = tmp_path / "ro"
            ro.mkdir(mode=0o500)
            assert main(["--output-dir", str(ro / "run"), *TINY_FLAGS]) == 2

    def test_missing_data_dir_is_named(self, tmp_path, capsys):
        missing = tmp_path / "no" / "VOCdevkit"
        assert main(["--data-dir", str(missing), "--output-dir", str(tmp_path / "run"), *TINY_FLAGS]) == 2
        assert str(missing) in capsys.readouterr().err


def _wait_for(predicate, proc, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"process ended (rc={proc.returncode}) before {what}:\n{out[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _big_model():
    inp = keras.Input((1000,))
    model = keras.Model(inp, keras.layers.Dense(4000, name="big")(inp))  # 16 MB of weights
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


WRITER = textwrap.dedent("""
    import sys
    from deeplab_keras.training import callbacks as cb
    from test_training import _big_model
    model = _big_model()
    step = 0
    while True:
        step += 1
        model.optimizer.iterations.assign(step)
        print(f"begin {step}", flush=True)
        cb.save_checkpoint(model, sys.argv[1], step, keep=100)
""")


class TestNothingLost:
    def test_killed_run_resumes_from_its_checkpoint_with_optimizer_state(self, tmp_path):
        from deeplab_keras.training.losses import SegmentationCrossEntropy
        from deeplab_keras.training.optimizer import make_optimizer
        from deeplab_keras.training.schedules import make_schedule
        from deeplab_keras.training.trainer import build_networks, resolve_data, train

        run_dir = tmp_path / "run"
        argv = ["--output-dir", str(run_dir), "--steps", "20", "--checkpoint-every", "5", *TINY_FLAGS]
        proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *argv], cwd=tmp_path,
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            _wait_for(lambda: cb.list_checkpoints(run_dir), proc, 240, "the first checkpoint")
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        saved = cb.list_checkpoints(run_dir)
        assert saved and saved[-1][0] < 20, saved
        killed_at = saved[-1][0]

        # The checkpoint holds the optimizer: its step counter and non-zero momentum.
        config, _ = resolve_data(resolve_config(build_parser().parse_args(argv)))
        _, model = build_networks(config)
        opt = make_optimizer(model, make_schedule(config))
        model.compile(opt, SegmentationCrossEntropy())
        opt.build(model.trainable_variables)
        assert cb.restore_checkpoint(model, saved[-1][1]) == killed_at
        assert int(opt.iterations.numpy()) == killed_at
        assert any(np.abs(m.numpy()).max() > 0 for m in opt.momentums)
        schedule_lr = float(opt.learning_rate)
        assert schedule_lr == pytest.approx(float(make_schedule(config)(killed_at)))

        # The same command again continues at the saved step and finishes the run.
        result = train(config, verbose=0)
        assert result.resumed_from == killed_at and result.step == 20
        assert cb.latest_checkpoint(run_dir)[0] == 20

    def test_kill_during_a_checkpoint_write_leaves_only_complete_files(self, tmp_path):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    pytest.fail("the writer process died")
                if line.startswith("begin 4"):
                    time.sleep(0.01)  # inside save number 4 (a 16 MB + momentum file)
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        steps = [s for s, _ in cb.list_checkpoints(tmp_path)]
        assert steps[:3] == [1, 2, 3], steps
        model = _big_model()
        for step, path in cb.list_checkpoints(tmp_path):  # all complete and loadable
            assert cb.restore_checkpoint(model, path) == step
        leftovers = list((tmp_path / cb.CHECKPOINT_DIR).glob(".tmp-*"))
        # Killed mid-write: a temporary file, never a truncated ckpt-00000004.
        assert (steps == [1, 2, 3] and len(leftovers) == 1) or (steps == [1, 2, 3, 4] and not leftovers)
        assert cb.remove_stale_temporaries(tmp_path) == leftovers

    def test_failed_write_keeps_the_previous_file(self, tmp_path):
        from deeplab_keras.utils.atomic import atomic_save

        target = tmp_path / "ckpt-00000001.weights.h5"
        target.write_bytes(b"previous")

        def broken(tmp):
            Path(tmp).write_bytes(b"half")
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            atomic_save(broken, target, ".weights.h5")
        assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]

    def test_evaluation_reports_bad_files_and_finishes_the_rest(self, tmp_path):
        from deeplab_keras.data import synthetic
        from deeplab_keras.evaluation.evaluate import evaluate_split, format_table
        from deeplab_keras.models import build_model

        names = [f"img_{i}" for i in range(5)]
        synthetic.write_voc(tmp_path, synthetic.make_examples(names, seed=1, min_hw=(40, 48),
                                                              max_hw=(48, 56)), {"val": names})
        voc = tmp_path / "VOC2012"
        jpg = voc / "JPEGImages" / "img_0.jpg"
        jpg.write_bytes(jpg.read_bytes()[:150])                            # truncated JPEG
        (voc / "JPEGImages" / "img_1.jpg").write_text("this is text")      # not an image
        (voc / "SegmentationClass" / "img_2.png").unlink()                 # missing label
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(voc / "SegmentationClass" / "img_3.png")
        model = build_model("vgg16_largefov", num_classes=6, width_multiplier=0.0625)
        result = evaluate_split(model, tmp_path, "val", num_classes=6, verbose=False)
        assert [n for n, _ in result.failed] == ["img_0", "img_1", "img_2", "img_3"]
        assert result.num_images == 1 and result.confusion.sum() > 0
        assert "img_2.png" in dict(result.failed)["img_2"]
        assert "FAILED img_1" in format_table(result)
