"""Class names of the datasets the released DeepLab models were trained on.

- `VOC_CLASSES` (21): PASCAL VOC 2012, index 0 background (label 255 = ignore).
- `COCO_CLASSES` (91): the MS-COCO head of DeepLab v2's ResNet-101 init
  (`init.caffemodel`): index 0 background, index i = COCO category id i
  (1..90); the 10 ids COCO never annotated are named "<name> (unused)".
- `COCOSTUFF_CLASSES` (182): COCO-Stuff 10k/164k as deeplab-pytorch indexes
  it (0-based): 0..90 the 91 thing ids 1..91, 91..181 the 91 stuff classes.

Example:
  >>> labels_for(21)[15]
  'person'
"""

from deeplab_keras.palette import VOC_CLASSES  # noqa: E402  (one list, re-exported here)

# COCO category ids 1..91 (the 2014 paper's list; ids never annotated marked unused).
_COCO_THINGS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign (unused)", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "hat (unused)", "backpack", "umbrella", "shoe (unused)", "eye glasses (unused)", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate (unused)",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "mirror (unused)", "dining table", "window (unused)", "desk (unused)", "toilet",
    "door (unused)", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "blender (unused)", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush (unused)",
)

COCO_CLASSES = ("background",) + _COCO_THINGS[:90]

_COCO_STUFF = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

COCOSTUFF_CLASSES = tuple(name.replace(" (unused)", "") for name in _COCO_THINGS) + _COCO_STUFF

LABEL_SETS = {"voc": VOC_CLASSES, "coco": COCO_CLASSES, "cocostuff": COCOSTUFF_CLASSES}


def labels_for(num_classes):
    """The label names of a known class count (21, 91, 182), else None.

    Args:
      num_classes: int.

    Returns:
      tuple of str with `num_classes` names, or None for another count.
    """
    for names in LABEL_SETS.values():
        if len(names) == num_classes:
            return names
    return None


assert len(VOC_CLASSES) == 21 and len(COCO_CLASSES) == 91 and len(COCOSTUFF_CLASSES) == 182
