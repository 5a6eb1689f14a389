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
    for name, devs in (("one", devices[:1]), ("two", devices)):
        cfg = apply_overrides(get_preset("builtin"), dict(
            width_multiplier=0.0625, crop_size=65, batch_size=4, steps=6, steps_per_epoch=1,
            checkpoint_every=100, base_lr=0.01, init="keras", seed=3,
            output_dir=sys.argv[1] + "/" + name,
            evaluate=False, export_dir=None))
        result = train(cfg, devices=devs, verbose=0)
        out[name] = result.history["loss"]
    print("RESULT " + json.dumps(out))
""")


def test_mirrored_two_logical_cpus_matches_one_device(tmp_path):
    """Same data, same initial weights: the per-step losses agree.

    Tolerance: the two runs differ only in float32 summation order (per-replica
    partial sums, then an all-reduce); measured here 1.4e-7 relative over the 6
    steps. rtol 1e-5 leaves a 70x margin and still catches a wrong
    normalisation: random crops give the two replicas different numbers of
    ignored (255) pixels, and averaging the replicas' own means (instead of
    dividing by the global valid-pixel count) moved the loss by up to 2e-3
    relative in the same run.
    """
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    losses = json.loads(line[len("RESULT "):])
    assert len(losses["one"]) == len(losses["two"]) == 6
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-5)
    assert losses["one"][-1] < losses["one"][0]  # it is really training


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
