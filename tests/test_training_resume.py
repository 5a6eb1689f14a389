"""Killed runs resume where they stopped; checkpoint files are never half-written."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from deeplab_keras.training import callbacks as cb

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "width_multiplier=0.0625", "--set", "crop_size=65", "--set", "batch_size=2",
        "--set", "steps_per_epoch=5", "--no-eval", "--no-export"]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


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


def test_killed_run_resumes_from_its_checkpoint_with_optimizer_state(tmp_path):
    from deeplab_keras.training.cli import build_parser, resolve_config
    from deeplab_keras.training.trainer import build_networks, train

    run_dir = tmp_path / "run"
    argv = ["--output-dir", str(run_dir), "--steps", "20", "--checkpoint-every", "5", *TINY]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *argv], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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

    # The checkpoint holds the optimizer: step counter and non-zero momentum.
    config = resolve_config(build_parser().parse_args(argv))
    import keras

    from deeplab_keras.training.losses import SegmentationCrossEntropy
    from deeplab_keras.training.optimizer import make_optimizer
    from deeplab_keras.training.schedules import make_schedule
    from deeplab_keras.training.trainer import resolve_data

    config, _ = resolve_data(config)
    _, model = build_networks(config)
    opt = make_optimizer(model, make_schedule(config))
    model.compile(opt, SegmentationCrossEntropy())
    opt.build(model.trainable_variables)
    assert cb.restore_checkpoint(model, saved[-1][1]) == killed_at
    assert int(opt.iterations.numpy()) == killed_at
    assert any(np.abs(m.numpy()).max() > 0 for m in opt.momentums)
    del model, opt
    keras.backend.clear_session()

    # Same command again: it continues at the saved step and finishes the run.
    result = train(config, verbose=0)
    assert result.resumed_from == killed_at
    assert result.step == 20
    assert cb.latest_checkpoint(run_dir)[0] == 20
    for _, path in cb.list_checkpoints(run_dir):
        assert path.stat().st_size > 0


def _big_model():
    import keras

    inp = keras.Input((1000,))
    model = keras.Model(inp, keras.layers.Dense(4000, name="big")(inp))  # 16 MB of weights
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    model.optimizer.build(model.trainable_variables)
    return model


WRITER = textwrap.dedent("""
    import sys, keras
    from deeplab_keras.training import callbacks as cb
    from test_training_resume import _big_model
    model = _big_model()
    step = 0
    while True:
        step += 1
        model.optimizer.iterations.assign(step)
        print(f"begin {step}", flush=True)
        cb.save_checkpoint(model, sys.argv[1], step, keep=100)
""")


def test_kill_during_a_checkpoint_write_leaves_only_complete_files(tmp_path):
    env = _env()
    env["PYTHONPATH"] = str(Path(__file__).parent) + os.pathsep + env["PYTHONPATH"]
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("writer died")
            if line.startswith("begin 4"):
                time.sleep(0.01)  # inside save number 4
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    complete = cb.list_checkpoints(tmp_path)
    steps = [s for s, _ in complete]
    assert steps[:3] == [1, 2, 3], steps
    model = _big_model()
    for step, path in complete:  # every file under a final name is a complete checkpoint
        assert cb.restore_checkpoint(model, path) == step
    leftovers = list((tmp_path / cb.CHECKPOINT_DIR).glob(".tmp-*"))
    assert len(steps) == 3 and len(leftovers) == 1 or len(steps) == 4 and not leftovers, (steps, leftovers)
    assert cb.remove_stale_temporaries(tmp_path) == leftovers


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    from deeplab_keras.training.atomic import atomic_save

    target = tmp_path / "ckpt-00000001.weights.h5"
    target.write_bytes(b"previous")

    def broken(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(broken, target, ".weights.h5")
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]
