"""mIoU from the confusion matrix, checked against a case worked out by hand."""

import numpy as np
import pytest

from deeplab_keras.evaluation.metrics import (ConfusionMatrix, confusion_matrix, iou_per_class,
                                              mean_class_accuracy, mean_iou, pixel_accuracy)

# 3 classes, 12 pixels, 2 ignored:
LABELS = np.array([[0, 0, 0, 1],
                   [1, 1, 2, 2],
                   [255, 255, 0, 1]])
PREDS = np.array([[0, 0, 1, 1],
                  [1, 2, 2, 0],
                  [2, 1, 0, 1]])
# Counted by hand (rows = ground truth, columns = prediction), ignored pixels dropped:
#   class 0 pixels: (0,0)->0 (0,1)->0 (0,2)->1 (2,2)->0          => [3, 1, 0]
#   class 1 pixels: (0,3)->1 (1,0)->1 (1,1)->2 (2,3)->1          => [0, 3, 1]
#   class 2 pixels: (1,2)->2 (1,3)->0                            => [1, 0, 1]
HAND_CM = np.array([[3, 1, 0],
                    [0, 3, 1],
                    [1, 0, 1]])
# IoU: class 0: 3 / (4 + 4 - 3) = 3/5; class 1: 3 / (4 + 4 - 3) = 3/5; class 2: 1 / (2 + 2 - 1) = 1/3
HAND_IOU = [3 / 5, 3 / 5, 1 / 3]


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(LABELS, PREDS, 3), HAND_CM)


def test_iou_and_miou_by_hand():
    cm = confusion_matrix(LABELS, PREDS, 3)
    np.testing.assert_allclose(iou_per_class(cm), HAND_IOU)
    assert mean_iou(cm) == pytest.approx((3 / 5 + 3 / 5 + 1 / 3) / 3)
    assert pixel_accuracy(cm) == pytest.approx(7 / 10)
    assert mean_class_accuracy(cm) == pytest.approx((3 / 4 + 3 / 4 + 1 / 2) / 3)


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    other = PREDS.copy()
    other[2, :2] = [1, 2]  # change the prediction only where the label is 255
    np.testing.assert_array_equal(confusion_matrix(LABELS, other, 3), HAND_CM)


def test_absent_class_is_left_out_of_the_mean():
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 1]), 4)
    iou = iou_per_class(cm)
    assert iou[:2].tolist() == [1.0, 1.0] and np.isnan(iou[2:]).all()
    assert mean_iou(cm) == 1.0


def test_streaming_equals_one_shot():
    acc = ConfusionMatrix(3)
    acc.update(LABELS[:1], PREDS[:1]).update(LABELS[1:], PREDS[1:])
    np.testing.assert_array_equal(acc.matrix, HAND_CM)
    assert acc.mean_iou() == pytest.approx(mean_iou(HAND_CM))


@pytest.mark.parametrize("labels,preds,match", [
    (np.array([0, 3]), np.array([0, 0]), "labels must be in"),
    (np.array([0, 1]), np.array([0, 5]), "predictions must be in"),
    (np.array([0, 1]), np.array([0, 1, 1]), "same shape"),
])
def test_bad_inputs_are_named(labels, preds, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(labels, preds, 3)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes=0"):
        ConfusionMatrix(0)
