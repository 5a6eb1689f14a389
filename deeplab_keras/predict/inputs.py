"""Inputs of `deeplab-predict`: finding image files and reading them as RGB uint8.

`read_image` / `_open_image` convert every supported mode to RGB, apply EXIF
orientation, refuse images above `max_pixels` and downscale those longer than
`max_side` (see the package docstring for the documented behaviour).
"""

import os
import warnings
from pathlib import Path

import numpy as np


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pnm")


# Inference resolution cap (long side). DeepLab is trained on ~500 px VOC images, so
# objects in much larger photos are at scales it never saw; 1024 also bounds the
# full-width VGG16 conv1 activations to 256 MB and CPU time to seconds per image.
DEFAULT_MAX_SIDE = 1024


# Decoding refuses images above this many pixels (an RGB 10000x10000 is 300 MB, a
# 120 MP image 360 MB); anything bigger is almost certainly a mistake or a bomb.
DEFAULT_MAX_PIXELS = 120_000_000


class ImageReadError(ValueError):
    """An input file that is not a readable, supported image.

    Attributes:
      path: the file.
      reason: what is wrong with it; `str(error)` is "<path>: <reason>".
    """

    def __init__(self, path, reason):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def _to_rgb(img, path):
    """Any PIL mode -> uint8 [H, W, 3] RGB."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale: PIL's convert("RGB") clips at 255 instead of scaling.
        values = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        raise ImageReadError(path, "floating-point images (PIL mode 'F') are not "
                             "supported; save it as an 8- or 16-bit PNG")
    # RGB, L, 1, P, RGBA, LA, PA, CMYK (incl. Adobe-inverted JPEG), YCbCr, LAB, HSV.
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _open_image(path, max_pixels, max_side=None, exif_transpose=True):
    """Decode `path`; returns (uint8 [h, w, 3] RGB, original (H, W)).

    When `max_side` is given the returned image is at most that long on its long
    side (JPEGs are decoded directly at a reduced scale, which saves memory);
    the original size is reported after EXIF rotation.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # We enforce our own, documented pixel limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageReadError(path, f"image is {w}x{h} = {w * h} pixels, above "
                                         f"the limit max_pixels={max_pixels}; downscale it first")
                if w < 1 or h < 1:
                    raise ImageReadError(path, f"image has no pixels ({w}x{h})")
                orientation = img.getexif().get(0x0112, 1) if exif_transpose else 1
                swap = orientation in (5, 6, 7, 8)
                orig_hw = (w, h) if swap else (h, w)
                if max_side and img.format == "JPEG" and max(w, h) > max_side:
                    scale = max_side / max(w, h)
                    img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
                img.load()
                if exif_transpose:
                    img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img, path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(path, f"image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated / corrupt data surface as OSError ("image file is truncated"),
        # SyntaxError (broken PNG chunks) or ValueError from the decoders.
        raise ImageReadError(path, f"cannot decode image ({e})") from None
    if max_side and max(rgb.shape[:2]) > max_side:
        rgb = _resize_image(rgb, _fit_within(rgb.shape[:2], max_side))
    return rgb, orig_hw


def read_image(path, *, max_pixels=DEFAULT_MAX_PIXELS, exif_transpose=True):
    """Read an image file as RGB uint8 at full resolution.

    Args:
      path: image file (any format PIL reads).
      max_pixels: refuse images with more pixels than this.
      exif_transpose: apply the EXIF orientation tag (as image viewers do).

    Returns:
      uint8 [H, W, 3] RGB.

    Raises:
      FileNotFoundError: `path` does not exist.
      ImageReadError: not a readable image, unsupported mode, or too large;
        the message starts with the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    return _open_image(path, max_pixels, exif_transpose=exif_transpose)[0]


def _fit_within(hw, max_side):
    h, w = hw
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize_image(image, size_hw):
    """Bilinear resize of an RGB uint8 image (antialiased when shrinking)."""
    from PIL import Image

    h, w = size_hw
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _list_inputs(inputs):
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise ValueError("No inputs given: pass image files or folders.")
    files, missing = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in "
                                 f"folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            missing.append(str(p))
    if missing:
        raise FileNotFoundError(f"Input not found: {', '.join(missing)}")
    return files


def _output_names(files):
    """Unique output stems: the file stem, with _2, _3 ... for repeats."""
    seen, names = {}, []
    for f in files:
        n = seen.get(f.stem, 0) + 1
        seen[f.stem] = n
        names.append(f.stem if n == 1 else f"{f.stem}_{n}")
    return names
