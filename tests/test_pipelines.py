"""The input pipelines give batches of the same form with and without TensorFlow (the GPU image of a JAX / PyTorch
machine has none): each image stays paired with its own label, copies or mined partner."""
import keras
import numpy as np
import pytest

from course_lib import training
from course_lib.methods.iic import iic_batches
from course_lib.methods.iic_hog import FeatureViewBatches, feature_view_batches
from course_lib.methods.scan import view_batches

# image i is filled with the value i: a batch says which images it holds
N = 50
X = np.broadcast_to(np.arange(N, dtype=np.uint8)[:, None, None, None], (N, 4, 4, 1)).copy()
IDENTITY = keras.layers.Identity()


@pytest.fixture(params=["tensorflow", "no tensorflow"])
def tf_or_not(request, monkeypatch):
    if request.param == "no tensorflow":
        monkeypatch.setattr(training, "tensorflow_or_none", lambda: None)  # as where it is not installed
    return request.param


def _ids(a):
    return np.asarray(a)[:, 0, 0, 0].round().astype(int)


def _epoch(batches):
    return [batches[i] for i in range(len(batches))] if hasattr(batches, "__getitem__") else list(batches)


def test_augmented_batches_keep_each_image_with_its_label(tf_or_not):
    y = (np.arange(N) * 7) % 11
    epoch = _epoch(training.augmented_batches(X, y, 16, IDENTITY, seed=0))
    assert tf_or_not == "tensorflow" or isinstance(training.augmented_batches(X, y, 16, IDENTITY),
                                                   training.IndexBatches)
    ids = np.concatenate([_ids(xb) for xb, _ in epoch])
    np.testing.assert_array_equal(np.concatenate([np.asarray(yb) for _, yb in epoch]), y[ids])
    assert sorted(ids) == list(range(N))  # every image once, the last batch kept
    assert not np.array_equal(ids, np.arange(N))  # shuffled


def test_iic_batches_stack_each_images_copies_image_by_image(tf_or_not):
    epoch = _epoch(iic_batches(X, 16, 3, IDENTITY, IDENTITY, seed=0))
    assert len(epoch) == N // 16  # the incomplete last batch is dropped
    for (orig, views), in epoch:
        ids = _ids(orig)
        assert len(ids) == 16
        np.testing.assert_array_equal(_ids(views), np.repeat(ids, 3))  # a replica's half keeps its copies


def test_view_batches_pair_each_anchor_with_its_partner(tf_or_not):
    partner = np.random.default_rng(1).integers(0, N, N)
    epoch = _epoch(view_batches(X, 16, IDENTITY, seed=0, partner_index=partner))
    assert len(epoch) == N // 16
    for (a, b), in epoch:
        np.testing.assert_array_equal(_ids(b), partner[_ids(a)])
    (a, b), = _epoch(view_batches(X, 16, IDENTITY, seed=0))[0]  # SimCLR: two views of the same images
    np.testing.assert_array_equal(_ids(a), _ids(b))


def test_index_batches_without_shuffle_keep_the_order():
    batches = training.IndexBatches(10, 4, lambda idx: idx, shuffle=False)
    assert len(batches) == 3 and list(batches[2]) == [8, 9]
    assert len(training.IndexBatches(10, 4, lambda idx: idx, drop_remainder=True)) == 2


def test_view_feature_batches_are_the_same_from_tf_data_and_from_the_pydataset():
    """IIC's CPU trunk trains on tf.data where TensorFlow is installed: same batches, same order, every epoch."""
    pytest.importorskip("tensorflow")
    feats = np.random.default_rng(0).standard_normal((3, 40, 4)).astype("float32")
    reference = FeatureViewBatches(feats, 8, seed=3)
    pipeline = feature_view_batches(feats, 8, seed=3)
    assert not isinstance(pipeline, FeatureViewBatches)
    epochs = []
    for _ in range(2):
        got = [(np.asarray(f), np.asarray(v)) for (f, v), in pipeline]  # one pass = one epoch
        want = [reference[i][0] for i in range(len(reference))]
        reference.on_epoch_end()
        assert len(got) == len(want) == 5
        for (f, v), (f_ref, v_ref) in zip(got, want):
            np.testing.assert_array_equal(f, f_ref)
            np.testing.assert_array_equal(v, v_ref)
        epochs.append(got[0][0])
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled between epochs
