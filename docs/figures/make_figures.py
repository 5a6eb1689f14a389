"""Make the README figures from a model trained on the built-in dataset.

    python docs/figures/make_figures.py                    # short training run, then figures
    python docs/figures/make_figures.py --checkpoint runs/builtin/model.keras

Without --checkpoint it trains the recipe of notebooks/01_train_and_evaluate.ipynb
for longer: VGG16-LargeFOV at width 1/8, He-initialised convolutions, Adam with
DeepLab v2's poly decay, 129x129 crops, batch 8, `--steps` steps on the built-in
train split (about 2 minutes on a 2-core CPU). It then writes

- builtin_predictions.png: image | prediction | with CRF | ground truth for the
  first `--num-images` images of the built-in val split;
- builtin_training_curves.png: loss and validation mIoU from the CSV log
  (only when it trained);

and prints the val mIoU before and after the CRF for the caption.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def train(work_dir, steps, width, seed):
    import keras

    from deeplab_keras.data import builtin, make_dataset
    from deeplab_keras.evaluation import evaluate_split
    from deeplab_keras.models import build_model, classifier_layers
    from deeplab_keras.training import SegmentationCrossEntropy

    keras.utils.set_random_seed(seed)
    voc_dir = builtin.ensure_builtin()
    train_ds = make_dataset(voc_dir, "train", training=True, batch_size=8, crop_size=129,
                            num_classes=builtin.NUM_CLASSES, seed=seed, cache=True,
                            repeat=True)
    model = build_model("vgg16_largefov", num_classes=builtin.NUM_CLASSES,
                        width_multiplier=width, dropout=0.0, model_name="deeplab_builtin")
    # From scratch, Glorot-initialised ReLU stacks barely train in a few hundred
    # steps; He initialisation keeps the signal (see notebook 01).
    he_normal = keras.initializers.HeNormal(seed=seed)
    classifier = {layer.name for layer in classifier_layers(model)}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.name not in classifier:
            kernel, bias = layer.get_weights()
            layer.set_weights([np.asarray(he_normal(kernel.shape)), bias])
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, steps, end_learning_rate=0.0,
                                                          power=0.9)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=SegmentationCrossEntropy())

    class ValidationMeanIoU(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_miou"] = evaluate_split(self.model, voc_dir, "val",
                                              num_classes=builtin.NUM_CLASSES, limit=20,
                                              verbose=False).miou

    log_path = work_dir / "training_log.csv"
    steps_per_epoch = 50
    model.fit(train_ds, epochs=steps // steps_per_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=[ValidationMeanIoU(), keras.callbacks.CSVLogger(str(log_path))],
              verbose=2)
    model.save(work_dir / "model.keras")
    return model, log_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a .keras model trained on the built-in data")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--width", type=float, default=0.125, help="width_multiplier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=3)
    parser.add_argument("--out-dir", default=str(HERE))
    parser.add_argument("--work-dir", default=None, help="keep the run here (default: temp)")
    args = parser.parse_args(argv)
    if args.steps < 50 or args.steps % 50:
        parser.error(f"--steps must be a positive multiple of 50. Received: {args.steps}")

    import keras

    from deeplab_keras import viz
    from deeplab_keras.crf import DenseCRF
    from deeplab_keras.data import builtin, decode, voc
    from deeplab_keras.evaluation import evaluate_split
    from deeplab_keras.models import resize_logits
    from deeplab_keras.preprocessing import preprocess_images

    out_dir = Path(args.out_dir)
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="deeplab_figures_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        model, log_path = keras.models.load_model(args.checkpoint, compile=False), None
    else:
        model, log_path = train(work_dir, args.steps, args.width, args.seed)

    voc_dir = builtin.ensure_builtin()
    crf = DenseCRF()
    examples = voc.list_examples(voc_dir, "val")[: args.num_images]
    rgbs, before, after, truth = [], [], [], []
    for example in examples:
        rgb = decode.read_image(example.image_path)
        logits = resize_logits(model(preprocess_images(rgb[None])), rgb.shape[:2])
        rgbs.append(rgb)
        before.append(np.argmax(logits[0], axis=-1))
        after.append(np.argmax(crf(rgb[None].astype("float32"), logits)[0], axis=-1))
        truth.append(decode.read_label(example.label_path))
    fig = viz.side_by_side(rgbs, before, after, truth, class_names=builtin.CLASS_NAMES,
                           column_width=2.2)
    path = viz.save_figure(fig, out_dir / "builtin_predictions.png", dpi=80)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    if log_path is not None:
        path = viz.save_figure(viz.plot_training_curves(log_path), out_dir /
                               "builtin_training_curves.png", dpi=80)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")

    common = dict(num_classes=builtin.NUM_CLASSES, verbose=False)
    plain = evaluate_split(model, voc_dir, "val", **common)
    refined = evaluate_split(model, voc_dir, "val", crf=crf, **common)
    print(f"built-in val ({plain.num_images} images): mIoU {plain.miou:.3f} before the CRF, "
          f"{refined.miou:.3f} after")


if __name__ == "__main__":
    main()
