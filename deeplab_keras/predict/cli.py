"""`deeplab-predict`: the command line over `predict_paths`."""

import argparse
import os
import sys

from deeplab_keras.predict.inputs import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from deeplab_keras.predict.paths import predict_paths


def main(argv=None):
    """The `deeplab-predict` console script. Returns the exit status.

    0: every image segmented; 1: some images failed (named in the summary);
    2: bad arguments, missing model or inputs, unwritable output directory.
    """
    parser = argparse.ArgumentParser(
        prog="deeplab-predict",
        description="Segment images with a DeepLab model (.keras, SavedModel directory or "
                    ".tflite). Writes OUTPUT/labels/<name>.png (VOC palette PNG, pixel = "
                    "class id) and OUTPUT/overlays/<name>.jpg.")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("-m", "--model", required=True,
                        help=".keras checkpoint, SavedModel directory or .tflite file")
    parser.add_argument("-o", "--output-dir", required=True, help="output folder")
    parser.add_argument("--crf", action="store_true",
                        help="refine with the dense CRF (deeplab_keras.crf.DenseCRF defaults)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="fail unless the model outputs this many classes")
    parser.add_argument("--no-overlays", action="store_true", help="write label PNGs only")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (0.5)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"downscale longer images for inference ({DEFAULT_MAX_SIDE})")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images with more pixels ({DEFAULT_MAX_PIXELS})")
    parser.add_argument("--ignore-exif", action="store_true",
                        help="do not apply EXIF orientation (use the stored pixel order, "
                             "like the training and evaluation readers)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        summary = predict_paths(
            args.inputs, args.model, args.output_dir, crf=args.crf,
            num_classes=args.num_classes, overlays=not args.no_overlays, alpha=args.alpha,
            max_side=args.max_side, max_pixels=args.max_pixels,
            exif_transpose=not args.ignore_exif, verbose=not args.quiet)
    except (ValueError, OSError, ImportError) as e:
        print(f"deeplab-predict: error: {e}", file=sys.stderr)
        return 2
    if args.quiet and summary.failed:
        print(summary, file=sys.stderr)
    return 0 if summary.ok else 1
