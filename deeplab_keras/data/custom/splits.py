"""Splits of your own data: from list files, or seeded 90/10 when there are none."""

import numpy as np

from deeplab_keras.data.custom.files import IMAGE_SUFFIXES
from deeplab_keras.data.decode import DataError
from deeplab_keras.data.voc import read_name_list

SPLIT_SEED = 0
VAL_FRACTION = 0.1


def seeded_split(examples, seed=SPLIT_SEED, val_fraction=VAL_FRACTION):
    """(train, val): a reproducible random split of examples sorted by name.

    val gets round(val_fraction * n) examples (at least 1 when n >= 2).
    """
    examples = sorted(examples, key=lambda e: e.name)
    n = len(examples)
    n_val = max(1 if n >= 2 else 0, int(round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def seeded_splits(pairs, note_prefix=""):
    """({"train", "val"}, note) of `seeded_split(pairs)`, the note giving seed and sizes."""
    train, val = seeded_split(pairs)
    note = (f"no split lists or split folders: seeded random split, seed {SPLIT_SEED}, "
            f"{int(round(100 * (1 - VAL_FRACTION)))}/{int(round(100 * VAL_FRACTION))} -> "
            f"{len(train)} train, {len(val)} val")
    return {"train": train, "val": val}, note_prefix + note


def read_names(path):
    """The names of a split list (`name`, `name.jpg` or a path per line)."""
    return read_name_list(path, IMAGE_SUFFIXES)


def from_lists(pairs, lists, root):
    """{split: [Example]} of the names in each list file, in list order.

    Raises:
      DataError: a listed name with no image/mask pair (naming the list).
    """
    by_name = {e.name: e for e in pairs}
    splits = {}
    for split, path in lists.items():
        names = read_names(path)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"{path} lists {len(missing)} name(s) with no image/mask pair in "
                            f"{root}: {missing[:5]}")
        splits[split] = [by_name[n] for n in names]
    return splits
