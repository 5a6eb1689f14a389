"""tf.distribute: MirroredStrategy on 2 logical CPUs matches 1 device; 2-worker MWMS runs.

Both run in subprocesses: logical devices must be configured before TensorFlow
initialises, and each MultiWorkerMirroredStrategy worker is its own process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


MIRRORED = textwrap.dedent("""
    import json, sys
    from deeplab_keras.training.strategy import split_cpu
    devices = split_cpu(2)  # before any TF op
    from deeplab_keras.training import apply_overrides, get_preset
    from deeplab_keras.training.trainer import train
    out = {}
    runs = {"one": (devices[:1], 1), "two": (devices, 1), "two_accumulate_2": (devices, 2)}
    for name in sys.argv[2].split(","):
        devs, accumulate = runs[name]
        cfg = apply_overrides(get_preset("builtin"), dict(
            width_multiplier=0.0625, crop_size=65, batch_size=4, steps=6, steps_per_epoch=1,
            checkpoint_every=100, base_lr=0.01, init="keras", seed=3,
            output_dir=sys.argv[1] + "/" + name, accumulate=accumulate,
            evaluate=False, export_dir=None))
        result = train(cfg, devices=devs, verbose=0)
        out[name] = result.history["loss"]
    print("RESULT " + json.dumps(out))
""")


def test_mirrored_two_logical_cpus_matches_one_device(tmp_path):
    """Same data, same initial weights: the per-step losses agree, also with 2
    replicas x 2 accumulated micro-batches of 1 image (the micro-batch weights use
    the cross-replica valid-pixel counts).

    Tolerance: the two runs differ only in float32 summation order (per-replica
    partial sums, then an all-reduce); measured here 1.4e-7 relative over the 6
    steps. rtol 1e-5 leaves a 70x margin and still catches a wrong
    normalisation: random crops give the two replicas different numbers of
    ignored (255) pixels, and averaging the replicas' own means (instead of
    dividing by the global valid-pixel count) moved the loss by up to 2e-3
    relative in the same run.
    """
    losses = {}
    # The accumulating run in a process of its own: there, it matches; after another
    # MirroredStrategy run in the same process, TF 2.21's CPU collectives mis-paired
    # its all-reduces ("Shape mismatch in the collective instance").
    # The two processes run at the same time (each is mostly start-up).
    procs = [subprocess.Popen([sys.executable, "-c", MIRRORED, str(tmp_path), runs], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for runs in ("one,two", "two_accumulate_2")]
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
        losses.update(json.loads(line[len("RESULT "):]))
    assert len(losses["one"]) == len(losses["two"]) == len(losses["two_accumulate_2"]) == 6
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-5)
    assert losses["one"] == pytest.approx(losses["two_accumulate_2"], rel=1e-5)
    assert losses["one"][-1] < losses["one"][0]  # it is really training


SYNC_BN = textwrap.dedent("""
    import json
    from deeplab_keras.training.strategy import split_cpu
    devices = split_cpu(2)  # before any TF op
    import keras, numpy as np
    from deeplab_keras.training.strategy import make_strategy, synchronize_batchnorm
    strategy = make_strategy(devices=devices)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 5, 5, 3)).astype("float32")
    x[:2] = 3 * x[:2] + 2  # the two replicas' halves have other statistics
    out = {}
    for sync in (False, True):
        with strategy.scope():
            inputs = keras.Input((5, 5, 3))
            h = keras.layers.BatchNormalization(momentum=0.0, name="trained_bn")(inputs)
            frozen = keras.layers.BatchNormalization(name="frozen_bn")
            frozen.trainable = False
            model = keras.Model(inputs, frozen(h))
            model.compile(optimizer="sgd", loss="mse")
            switched = synchronize_batchnorm(model, strategy) if sync else []
        model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, shuffle=False, verbose=0)
        bn = model.get_layer("trained_bn")
        out["sync" if sync else "local"] = dict(
            switched=switched, mean=bn.moving_mean.numpy().tolist(),
            variance=bn.moving_variance.numpy().tolist())
    out["global"] = dict(mean=x.mean(axis=(0, 1, 2)).tolist(), variance=x.var(axis=(0, 1, 2)).tolist())
    print("RESULT " + json.dumps(out))
""")


def test_sync_batchnorm_uses_the_global_batch_statistics(tmp_path):
    """Under 2 replicas a trained BN layer switched by `synchronize_batchnorm` gets
    the variance of the global batch (momentum 0: moving = batch statistics); without
    it, per-replica statistics (off by up to 68 % in one channel here). Frozen BN is
    not switched."""
    proc = subprocess.run([sys.executable, "-c", SYNC_BN], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert out["sync"]["switched"] == ["trained_bn"]
    assert out["sync"]["mean"] == pytest.approx(out["global"]["mean"], rel=1e-4, abs=1e-5)
    assert out["sync"]["variance"] == pytest.approx(out["global"]["variance"], rel=1e-4)
    # Without synchronisation the statistics are per replica (and visibly off).
    local, whole = out["local"]["variance"], out["global"]["variance"]
    assert max(abs(v - g) / g for v, g in zip(local, whole)) > 0.1, (local, whole)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_two_processes_run_a_few_steps(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir = tmp_path / "run"
    argv = [sys.executable, str(REPO / "train.py"), "--multi-worker", "--output-dir", str(run_dir),
            "--steps", "3", "--batch-size", "4", "--checkpoint-every", "3",
            "--set", "width_multiplier=0.0625", "--set", "crop_size=65",
            "--set", "steps_per_epoch=3", "--no-eval", "--no-export"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=_env(TF_CONFIG=tf_config),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=300)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    assert (run_dir / "checkpoints" / "ckpt-00000003.weights.h5").is_file()  # written by the chief
    assert "step 3" in outputs[0] and "step 3" in outputs[1]
