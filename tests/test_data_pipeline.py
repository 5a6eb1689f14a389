"""The tf.data pipeline: augmentation alignment, determinism, eval mode, padding."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_keras.data import builtin, make_dataset, synthetic
from deeplab_keras.data.pipeline import augment
from deeplab_keras.palette import IGNORE_LABEL
from deeplab_keras.preprocessing import MEAN_RGB, deprocess_images

# Class colours far apart, so a colour identifies its class even after JPEG.
COLOURS = np.array([[20, 20, 20], [230, 30, 30], [30, 230, 30], [30, 30, 230],
                    [230, 230, 30]], np.float32)


def _colour_coded_example(rng, h, w):
    """An image whose colour is its class; the label has VOC-like 255 boundaries."""
    _, classes = synthetic.render_scene(rng, h, w, max_objects=4, num_classes=5)
    image = COLOURS[classes].astype(np.uint8)
    return image, synthetic.mark_boundaries(classes, radius=1)


def test_augment_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    image, label = _colour_coded_example(rng, 45, 60)
    sizes = set()
    for s in range(24):
        out_img, out_lab = augment(image, label, [s, 7], crop_size=(50, 40))
        out_img, out_lab = out_img.numpy(), out_lab.numpy()
        assert out_img.shape == (50, 40, 3) and out_lab.shape == (50, 40)
        valid = out_lab != IGNORE_LABEL
        assert valid.any()
        # Every non-ignored pixel has exactly its class colour (bilinear taps lie
        # within 1 px of the nearest-neighbour source pixel, inside the class).
        np.testing.assert_allclose(out_img[valid], COLOURS[out_lab[valid]], atol=1e-3)
        assert set(np.unique(out_lab)) <= set(np.unique(label))  # nearest: no new ids
        # Padding: image exactly the mean, label 255.
        pad = np.all(np.abs(out_img - np.array(MEAN_RGB, np.float32)) < 1e-4, axis=-1)
        assert np.all(out_lab[pad] == IGNORE_LABEL)
        sizes.add(int(pad.sum()))
    assert len(sizes) > 5, "random scale should change the padded area"


def test_augment_flip_and_crop_match_reference():
    # Scale 1 and a crop larger than the image: the output is the padded image,
    # mirrored when the flip draw says so; check it pixel by pixel.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    label = rng.integers(0, 5, (6, 9)).astype(np.uint8)
    outs = []
    for s in range(8):
        img, lab = augment(image, label, [s, 1], crop_size=(8, 10), scale_range=(1, 1))
        ref_img = np.broadcast_to(np.array(MEAN_RGB, np.float32), (8, 10, 3)).copy()
        ref_img[:6, :9] = image
        ref_lab = np.full((8, 10), 255, np.int32)
        ref_lab[:6, :9] = label
        flipped = np.array_equal(lab.numpy(), ref_lab[:, ::-1])
        if flipped:
            ref_img, ref_lab = ref_img[:, ::-1], ref_lab[:, ::-1]
        np.testing.assert_array_equal(lab.numpy(), ref_lab)
        np.testing.assert_allclose(img.numpy(), ref_img, atol=1e-4)
        outs.append(flipped)
    assert set(outs) == {True, False}


@pytest.fixture(scope="module")
def colour_voc(tmp_path_factory):
    """8 train + 3 val colour-coded JPEG images in VOCdevkit layout."""
    root = tmp_path_factory.mktemp("colourvoc") / "VOCdevkit"
    rng = np.random.default_rng(5)
    exs = []
    for i in range(11):
        h, w = int(rng.integers(30, 50)), int(rng.integers(30, 60))
        image, label = _colour_coded_example(rng, h, w)
        exs.append((f"c_{i:03d}", image, label))
    names = [e[0] for e in exs]
    synthetic.write_voc(root, exs, {"train": names[:8], "val": names[8:],
                                    "trainval": names})
    return root, {n: (im, lab) for n, im, lab in exs}


def _classify(rgb):
    d = ((rgb[..., None, :] - COLOURS) ** 2).sum(-1)
    return d.argmin(-1)


def test_pipeline_alignment_end_to_end(colour_voc):
    root, _ = colour_voc
    ds = make_dataset(root, "train", training=True, batch_size=4, crop_size=40,
                      num_classes=5, seed=3)
    checked = 0
    for images, labels in ds:
        rgb = deprocess_images(images.numpy())
        lab = labels.numpy()
        assert images.shape == (4, 40, 40, 3) and labels.dtype == tf.int32
        valid = lab != IGNORE_LABEL
        # JPEG blurs colours near edges, but never across the 255 band: the
        # nearest class colour of each non-ignored pixel is its label.
        assert np.mean(_classify(rgb)[valid] == lab[valid]) > 0.999
        checked += int(valid.sum())
    assert checked > 2000


def test_same_seed_gives_identical_batches(colour_voc):
    root, _ = colour_voc

    def run(seed):
        ds = make_dataset(root, "train", training=True, batch_size=3, crop_size=24,
                          num_classes=5, seed=seed, return_names=True)
        return [tuple(t.numpy() for t in b) for b in ds]

    a, b, c = run(11), run(11), run(12)
    assert len(a) == 2  # 8 images, batch 3, remainder dropped
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_new_epoch_reshuffles_deterministically(colour_voc):
    root, _ = colour_voc
    ds = make_dataset(root, "train", training=True, batch_size=8, crop_size=16,
                      num_classes=5, seed=2, return_names=True)
    e1 = [n for _, _, n in ds][0].numpy().tolist()
    e2 = [n for _, _, n in ds][0].numpy().tolist()
    assert sorted(e1) == sorted(e2) and len(e1) == 8
    assert e1 != e2
    ds2 = make_dataset(root, "train", training=True, batch_size=8, crop_size=16,
                       num_classes=5, seed=2, return_names=True, repeat=True)
    names = [n for _, _, n in ds2.take(2)]
    assert names[0].numpy().tolist() == e1 and names[1].numpy().tolist() == e2


def test_eval_whole_image_never_cropped(colour_voc):
    root, exs = colour_voc
    ds = make_dataset(root, "val", training=False, batch_size=1, num_classes=5,
                      return_names=True)
    names = []
    for images, labels, n in ds:
        name = n.numpy()[0].decode()
        names.append(name)
        _, lab = exs[name]
        assert labels.shape[1:] == lab.shape
        np.testing.assert_array_equal(labels.numpy()[0], lab)
    assert names == ["c_008", "c_009", "c_010"]


def test_eval_pad_to_pads_with_ignore(colour_voc):
    root, exs = colour_voc
    ds = make_dataset(root, "val", training=False, batch_size=3, num_classes=5,
                      eval_pad_to=64, return_names=True)
    images, labels, names = next(iter(ds))
    assert images.shape == (3, 64, 64, 3)
    for k, n in enumerate(names.numpy()):
        _, lab = exs[n.decode()]
        h, w = lab.shape
        np.testing.assert_array_equal(labels[k, :h, :w].numpy(), lab)
        assert np.all(labels[k, h:].numpy() == 255) and np.all(labels[k, :, w:].numpy() == 255)
        # Padded image is the mean, i.e. exactly 0 after preprocessing.
        assert np.all(images[k, h:].numpy() == 0) and np.all(images[k, :, w:].numpy() == 0)


def test_cache_and_distribute(colour_voc):
    root, _ = colour_voc
    kw = dict(training=True, batch_size=4, crop_size=24, num_classes=5, seed=9)
    cached_ds = make_dataset(root, "train", cache=True, return_names=True, **kw)
    train_names = sorted(f"c_{i:03d}".encode() for i in range(8))
    for _ in range(2):  # the second epoch is served from the cache, reshuffled
        names = [n for b in cached_ds for n in b[2].numpy()]
        assert sorted(names) == train_names
    plain = [b[1].numpy() for b in make_dataset(root, "train", **kw)]
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    dist = strategy.experimental_distribute_dataset(make_dataset(root, "train", **kw))
    batches = [strategy.experimental_local_results(y)[0].numpy() for _, y in dist]
    assert len(batches) == len(plain) == 2
    for a, b in zip(batches, plain):
        np.testing.assert_array_equal(a, b)


def test_builtin_through_pipeline(tmp_path):
    root = builtin.generate(tmp_path / "bi", num_train=4, num_val=3, seed=0)
    ds = make_dataset(root, "val", training=False, batch_size=1,
                      num_classes=builtin.NUM_CLASSES)
    n = 0
    for images, labels in ds:
        vals = set(np.unique(labels.numpy()).tolist())
        assert vals <= set(range(builtin.NUM_CLASSES)) | {255}
        assert 255 in vals and 0 in vals and len(vals) >= 3
        assert 120 <= images.shape[1] <= 180 and 160 <= images.shape[2] <= 240
        n += 1
    assert n == 3
