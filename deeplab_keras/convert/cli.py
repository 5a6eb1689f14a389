"""`deeplab-convert SOURCE --output FILE.keras [--model NAME] [--num-classes N]`."""

import argparse
import sys


def build_parser():
    from deeplab_keras.models.registry import available_models

    p = argparse.ArgumentParser(
        prog="deeplab-convert",
        description="Convert a released DeepLab .caffemodel or deeplab-pytorch .pth into a "
                    "single-scale Keras model (.keras). Every Keras weight is matched by name and shape.",
    )
    p.add_argument("source", help="a .caffemodel (new or V1 format) or a deeplab-pytorch .pth")
    p.add_argument("--output", required=True, help="the .keras file to write (atomically)")
    p.add_argument("--model", choices=available_models(), default=None,
                   help="model to build (default: guessed from the layer names)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the output; a count different from the source keeps the backbone "
                        "and re-initialises the classifier")
    p.add_argument("--width-multiplier", type=float, default=1.0,
                   help="width of the network (1.0 = the released nets; smaller for reduced-width test files)")
    p.add_argument("--verbose", action="store_true", help="print every mapped layer")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        print(f"deeplab-convert: error: --num-classes must be >= 1. Received: {args.num_classes}", file=sys.stderr)
        return 2
    from deeplab_keras.convert.convert import convert, save_atomic

    try:
        if not str(args.output).endswith(".keras"):
            raise ValueError(f"--output must end in .keras. Received: {args.output!r}")
        result = convert(args.source, model=args.model, num_classes=args.num_classes,
                         width_multiplier=args.width_multiplier)
        save_atomic(result.model, args.output)
    except (OSError, ValueError) as err:
        print(f"deeplab-convert: error: {err}", file=sys.stderr)
        return 1
    summary = result.summary().splitlines()
    if not args.verbose:
        summary = [line for line in summary if not line.startswith("  ")]
    print("\n".join(summary))
    if result.source_classes is not None and result.num_classes != result.source_classes:
        print(f"note: --num-classes {result.num_classes} differs from the source's {result.source_classes} "
              "classes: backbone kept, classifier re-initialised (train it before use)")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
