"""The top layer: the main job (train, evaluate, export) and the command lines.

  job           `run(config)`: `python train.py`'s sequence.
  train_cli     `deeplab-train` / `python train.py`.
  evaluate_cli  `deeplab-evaluate` / `python -m deeplab_keras.evaluation`.
  export_cli    `deeplab-export` / `python export_tflite.py`.

These may import every package below them; nothing below imports them except the
allow-listed backwards-compatible entry points (`deeplab_keras.training.run`,
`python -m deeplab_keras.evaluation`), see docs/ARCHITECTURE.md.
"""


def __getattr__(name):
    if name == "run":
        from deeplab_keras.app.job import run

        return run
    raise AttributeError(f"module 'deeplab_keras.app' has no attribute {name!r}")
