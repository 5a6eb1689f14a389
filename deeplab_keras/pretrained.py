"""The released DeepLab models as named presets: `load_pretrained("deeplabv2_resnet101_voc")`.

The layer above the networks (`models`) and the converter (`convert`): the
registry of releases, their download and the cache of converted models.
`deeplab_keras.models.load_pretrained` (and the other names here) stay
importable from `models`, re-exported lazily for backwards compatibility.

Each `Release` says where the authors published the file, what it holds and
the paper's PASCAL VOC 2012 val mIoU (DESIGN.md Sec. 4 and 6). `load_pretrained`
fetches it with `keras.utils.get_file` (cached in ~/.keras/deeplab_keras),
converts it with `deeplab_keras.convert` (every weight matched by name and
shape) and returns the single-scale Keras model; the converted model is cached
as `<name>.keras` beside the download. A local path (.caffemodel, .pth or
.keras) does the same offline.
"""

import dataclasses
import os
import pathlib

from deeplab_keras.convert.convert import convert, save_atomic, source_format_of
from deeplab_keras.labels import COCO_CLASSES, COCOSTUFF_CLASSES, VOC_CLASSES

_JHU = "http://www.cs.jhu.edu/~alanlab/ccvl"
_V2 = "http://liangchiehchen.com/projects/released"
_PYTORCH = "https://github.com/kazuto1011/deeplab-pytorch/releases/download/v1.0"


@dataclasses.dataclass(frozen=True)
class Release:
    """One released DeepLab weights file.

    Attributes:
      name: preset name for `load_pretrained`.
      model: `build_model` name it converts to.
      file_name: the .caffemodel / .pth (inside `url` when that is a .zip).
      url: where the authors published it.
      num_classes: classes of its classifier.
      labels: tuple of the class names.
      val_miou: (before CRF, after CRF) PASCAL VOC 2012 val mIoU of the paper /
        release, or None where the release is an init or scored elsewhere.
      msc: the release was trained and scored with MSC inputs (1, 0.75, 0.5).
      notes: what it is.
    """

    name: str
    model: str
    file_name: str
    url: str
    num_classes: int
    labels: tuple
    val_miou: tuple
    msc: bool
    notes: str


_RELEASES = {
    r.name: r
    for r in (
        Release("deeplabv1_largefov_voc", "vgg16_largefov", "train_iter_6000.caffemodel",
                f"{_JHU}/DeepLab-LargeFOV/train_iter_6000.caffemodel", 21, VOC_CLASSES, (62.25, 67.64), False,
                "DeepLab v1 LargeFOV, stage 1 on train_aug (step lr, 6K iterations); V1 caffemodel"),
        Release("deeplabv1_largefov_voc_trainval", "vgg16_largefov", "train2_iter_8000.caffemodel",
                f"{_JHU}/DeepLab-LargeFOV/train2_iter_8000.caffemodel", 21, VOC_CLASSES, None, False,
                "DeepLab v1 LargeFOV, stage 2 fine-tuned on trainval_aug (8K); scoring it on val is contaminated"),
        Release("vgg16_20m_imagenet", "vgg16_largefov", "vgg16_20M.caffemodel",
                f"{_JHU}/init_models/vgg16_20M.caffemodel", 21, VOC_CLASSES, None, False,
                "ImageNet VGG16 with fc6/fc7 decimated to 3x3x1024 / 1024, an init: its backbone and "
                "fc6/fc7 are loaded, fc8 is a fresh 21-class classifier (or use it as backbone_weights)"),
        Release("deeplabv2_vgg16_aspp_l_voc", "vgg16_aspp_l", "train_iter_20000.caffemodel",
                f"{_V2}/deeplab_aspp_vgg16/prototxt_and_model.zip", 21, VOC_CLASSES, (68.96, 71.57), False,
                "DeepLab v2 VGG16 ASPP-L on train_aug (poly, 20K)"),
        Release("deeplabv2_resnet101_coco_init", "resnet101_aspp", "init.caffemodel",
                f"{_V2}/deeplab_aspp_resnet101/prototxt_and_model.zip", 91, COCO_CLASSES, None, True,
                "DeepLab v2 ResNet-101 MSC pretrained on MS-COCO (91-class head): the init of the 77.69 run"),
        Release("deeplabv2_resnet101_voc", "resnet101_aspp", "train_iter_20000.caffemodel",
                f"{_V2}/deeplab_aspp_resnet101/prototxt_and_model.zip", 21, VOC_CLASSES, (76.35, 77.69), True,
                "DeepLab v2 ResNet-101 MSC from the COCO init, train_aug (20K)"),
        Release("deeplabv2_resnet101_voc_trainval", "resnet101_aspp", "train2_iter_20000.caffemodel",
                f"{_V2}/deeplab_aspp_resnet101/prototxt_and_model.zip", 21, VOC_CLASSES, None, True,
                "as above, fine-tuned on trainval_aug (the test-server model); scoring it on val is contaminated"),
        Release("deeplabv2_resnet101_pytorch_voc", "resnet101_aspp", "deeplabv2_resnet101_msc-vocaug-20000.pth",
                f"{_PYTORCH}/deeplabv2_resnet101_msc-vocaug-20000.pth", 21, VOC_CLASSES, (76.65, 77.93), True,
                "deeplab-pytorch's reproduction from the converted COCO init"),
        Release("deeplabv2_resnet101_pytorch_cocostuff10k", "resnet101_aspp",
                "deeplabv2_resnet101_msc-cocostuff10k-20000.pth",
                f"{_PYTORCH}/deeplabv2_resnet101_msc-cocostuff10k-20000.pth", 182, COCOSTUFF_CLASSES, None, True,
                "deeplab-pytorch, COCO-Stuff 10k (182 classes; 34.8 mIoU on its test split)"),
        Release("deeplabv2_resnet101_pytorch_cocostuff164k", "resnet101_aspp",
                "deeplabv2_resnet101_msc-cocostuff164k-100000.pth",
                f"{_PYTORCH}/deeplabv2_resnet101_msc-cocostuff164k-100000.pth", 182, COCOSTUFF_CLASSES, None, True,
                "deeplab-pytorch, COCO-Stuff 164k (182 classes; 39.1 mIoU on val)"),
    )
}


def available_pretrained():
    """Names accepted by `load_pretrained`, sorted."""
    return sorted(_RELEASES)


def get_release(name):
    """The `Release` of `name`; ValueError naming it and the choices otherwise."""
    if not isinstance(name, str) or name not in _RELEASES:
        raise ValueError(f"Unknown pretrained model. Expected one of {available_pretrained()} "
                         f"or a path to a .caffemodel / .pth / .keras file. Received: name_or_path={name!r}")
    return _RELEASES[name]


def _download(release, cache_dir):
    import keras

    archive = release.url.endswith(".zip")
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)  # get_file falls back to /tmp for a missing folder
    path = keras.utils.get_file(
        fname=os.path.basename(release.url) if archive else release.file_name,
        origin=release.url, extract=archive, cache_dir=cache_dir, cache_subdir=f"deeplab_keras/{release.name}",
    )
    path = pathlib.Path(path)
    if not archive:
        return path
    found = sorted(path.rglob(release.file_name)) if path.is_dir() else []
    if not found:
        found = sorted(path.parent.rglob(release.file_name))
    if not found:
        raise ValueError(f"{release.url} does not contain {release.file_name!r}")
    return found[0]


def load_pretrained(name_or_path, num_classes=None, cache_dir=None, width_multiplier=1.0):
    """A released DeepLab model as a single-scale Keras model.

    Args:
      name_or_path: a name from `available_pretrained()` (downloaded with
        `keras.utils.get_file`), or a local .caffemodel / .pth (converted) or
        .keras (loaded) file.
      num_classes: for a released file: None keeps its classes; another count
        keeps the backbone and re-initialises the classifier.
      cache_dir: download / cache folder (default ~/.keras).
      width_multiplier: 1.0 for the released files (smaller for reduced-width test files).

    Returns:
      keras.Model: preprocessed images float32 [B, H, W, 3] (Caffe BGR minus
      mean) -> logits float32 [B, h, w, C] (`models.logits_size`). Wrap it in
      `wrap_msc` for the MSC releases (`get_release(name).msc`).

    Raises:
      ValueError: unknown name, or a file that does not convert (naming it).
      FileNotFoundError: a path that does not exist.

    Example:
      >>> model = load_pretrained("/data/train_iter_20000.caffemodel")  # offline
      >>> model = load_pretrained("deeplabv2_resnet101_voc")         # online
    """
    import keras

    text = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else None
    if text is None:
        raise ValueError(f"name_or_path must be a preset name or a path. Received: name_or_path={name_or_path!r}")
    if text.endswith(".keras"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"Model file not found. Received: name_or_path={text!r}")
        return keras.models.load_model(text)
    if text.lower().endswith((".caffemodel", ".pth", ".pt")) or os.path.sep in text:
        source_format_of(text)
        return convert(text, num_classes=num_classes, width_multiplier=width_multiplier).model
    release = get_release(text)
    source = _download(release, cache_dir)
    cached = source.parent / f"{release.name}.keras"
    if num_classes in (None, release.num_classes) and cached.is_file():
        return keras.models.load_model(cached)
    model = convert(source, model=release.model, num_classes=num_classes or release.num_classes,
                    width_multiplier=width_multiplier, backbone_only=release.name == "vgg16_20m_imagenet").model
    if num_classes in (None, release.num_classes):
        save_atomic(model, cached)
    return model
