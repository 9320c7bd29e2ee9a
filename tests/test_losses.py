import math

import numpy as np
import pytest
from keras import ops

from course_lib import losses


def _np(x):
    return float(ops.convert_to_numpy(x))


def test_iic_loss_matches_numpy_on_hand_made_distributions():
    c = 4
    p = np.eye(c, dtype="float32")[np.arange(40) % c]  # perfectly dependent, balanced views
    assert _np(losses.iic_loss(p, p)) == pytest.approx(-math.log(c), abs=1e-4)
    u = np.full((40, c), 1 / c, "float32")  # independent (uniform) views
    assert _np(losses.iic_loss(u, u)) == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(c), 64).astype("float32"), rng.dirichlet(np.ones(c), 64).astype("float32")
    pj = a.astype(np.float64).T @ b.astype(np.float64)
    pj = (pj + pj.T) / 2
    pj /= pj.sum()
    expected = -(pj * (np.log(pj) - np.log(pj.sum(1, keepdims=True)) - np.log(pj.sum(0, keepdims=True)))).sum()
    # I ~ 6e-4 is a difference of terms of size ~1 summed in float32: an absolute tolerance (JAX's sums round
    # differently from TensorFlow's, ~1e-7); leaving out the symmetrisation would give -2.5e-3
    assert _np(losses.iic_loss(a, b)) == pytest.approx(expected, abs=1e-6)


def test_iic_loss_punishes_a_collapsed_clustering():
    one = np.zeros((40, 4), "float32")
    one[:, 0] = 1  # every image in cluster 0: no information
    assert _np(losses.iic_loss(one, one)) == pytest.approx(0.0, abs=1e-5)


def test_scan_loss_is_minimal_for_confident_agreeing_balanced_neighbours():
    c = 5
    good = np.eye(c, dtype="float32")[np.arange(50) % c]
    total, cons, ent = (_np(v) for v in losses.scan_loss(good, good, entropy_weight=1.0))
    assert cons == pytest.approx(0.0, abs=1e-5) and ent == pytest.approx(math.log(c), abs=1e-4)
    collapsed = np.eye(c, dtype="float32")[np.zeros(50, int)]
    disagree = np.eye(c, dtype="float32")[(np.arange(50) + 1) % c]
    soft = np.full((50, c), 1 / c, "float32")
    for a, b in ((collapsed, collapsed), (good, disagree), (soft, soft)):
        assert _np(losses.scan_loss(a, b, entropy_weight=1.0)[0]) > total + 0.5


def test_nt_xent_lower_for_identical_views_than_shuffled():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(32, 16)).astype("float32")
    same = _np(losses.nt_xent_loss(z, z, 0.1))
    shuffled = _np(losses.nt_xent_loss(z, z[rng.permutation(32)], 0.1))
    assert same < shuffled - 1.0
    assert same >= 0


def test_sobel_responds_to_a_vertical_step_edge_only_in_x():
    from course_lib.models import SobelFilter

    img = np.zeros((1, 8, 8, 3), "float32")
    img[:, :, 4:] = 255.0  # dark left half, bright right half
    out = ops.convert_to_numpy(SobelFilter()(img))
    assert out.shape == (1, 8, 8, 2)
    gx, gy = out[0, 1:-1, :, 0], out[0, 1:-1, :, 1]
    assert np.abs(gx[:, 3:5]).min() == pytest.approx(4.0, abs=1e-4)  # 1+2+1 across the edge
    assert np.abs(gx[:, :2]).max() == 0 and np.abs(gy).max() == pytest.approx(0, abs=1e-5)
