import numpy as np
import pytest

from course_lib import benchmark, data, metrics, selflabel
from course_lib.methods import scan
from course_lib.methods.scan_hog import ScanHog


def test_mined_neighbours_of_a_duplicated_image_include_its_duplicate():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 32)).astype("float32")
    f[150] = f[7]  # a duplicate
    nb = scan.mine_neighbours(f, k=5)
    assert nb.shape == (200, 5) and nb[7, 0] == 150 and nb[150, 0] == 7
    assert not (nb == np.arange(200)[:, None]).any()  # never its own neighbour


def test_neighbour_agreement_with_and_without_groups():
    y = np.array([0, 0, 1, 1])
    groups = np.array([0, 0, 1, 2])
    nb = np.array([[1], [0], [3], [2]])
    a = scan.neighbour_label_agreement(nb, y, groups)
    assert a["neighbour_acc"] == 1.0 and a["same_group_share"] == 0.5 and a["neighbour_acc_other_groups"] == 1.0


def test_scan_head_losses_prefer_the_head_that_agrees_with_neighbours():
    nb = np.array([[1], [0], [3], [2]])
    good = np.eye(2)[[0, 0, 1, 1]]
    bad = np.eye(2)[[0, 1, 0, 1]] * 0.98 + 0.01
    assert np.argmin(scan.scan_head_losses(np.stack([bad, good]), nb, 1.0)) == 1


def test_scan_takes_a_learned_pretext_only():
    with pytest.raises(ValueError, match="pretext"):
        scan.SCAN(3, pretext="hog")
    with pytest.raises(ValueError, match="student"):
        scan.SCAN(3, student="mlp")
    with pytest.raises(ValueError, match="student_select"):
        scan.SCAN(3, student="cnn", student_select="agreement")


@pytest.mark.parametrize("views", [0, 2])
def test_scan_hog_on_real_digits_learns_and_reports_every_step(views):
    r = benchmark.run("scan-hog", "digits", profile="quick", verbose=False,
                      options={"selflabel_rounds": 1, "threshold": 0.9, "views": views})
    assert set(r["steps"]) == {"pretext+kmeans", "scan", "selflabel"}
    assert r["steps"]["scan"]["acc"] > 0.6 and r["acc"] > 0.6  # chance is 0.1
    head_losses = r["log"]["scan_head_losses"]
    assert len(head_losses) == 5 and r["log"]["best_head"] == int(np.argmin(head_losses))


@pytest.mark.parametrize("pretext", ["simclr", "rotnet"])
def test_cnn_pretexts_train_and_feed_the_mining(pretext, tmp_path):
    ds = data.load_dataset("digits", "train", max_images=400)
    est = scan.SCAN(10, pretext=pretext, pretext_epochs=1, batch_size=64, width=8, cache_dir=str(tmp_path))
    f = est.pretext(ds.x)
    assert f.shape == (400, 64) and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-4)
    assert len(est.log_["pretext_history"]["loss"]) == 1
    again = scan.SCAN(10, pretext=pretext, pretext_epochs=1, batch_size=64, width=8, cache_dir=str(tmp_path))
    np.testing.assert_allclose(again.pretext(ds.x), f, atol=1e-5)  # resumed from the cached step
    assert "pretext_history" not in again.log_


def test_a_nan_loss_stops_the_scan_step_with_advice():
    est = ScanHog(3, n_heads=1, scan_epochs=1, batch_size=8)
    feats = np.full((16, 4), np.nan, np.float32)  # broken features: the loss becomes NaN at once
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        est.cluster(np.zeros((16, 8, 8, 1), np.uint8), feats, np.tile(np.arange(1, 3), (16, 1)) % 16)


def test_augmented_views_are_described_once_beside_the_originals():
    ds = data.load_dataset("digits", "train", max_images=120)
    est = ScanHog(10, views=2)
    f = est.pretext(ds.x)
    assert f.shape == (120, 64) and est.view_features_.shape == (2, 120, 64)
    assert np.allclose(np.linalg.norm(est.view_features_, axis=2), 1, atol=1e-4)
    assert not np.allclose(est.view_features_[0], f)  # the copies are augmented, not the originals again
    # an augmented copy stays closer to its own original than to the other images, on average
    sims = est.view_features_[0] @ f.T
    assert np.mean(np.diag(sims)) > np.mean(sims) + 0.2


def test_self_labeling_starts_from_the_scan_network_itself(tmp_path):
    """The network self-labeling fine-tunes (backbone -> L2 -> MLP -> kept head, on images) gives at first the
    SCAN step's probabilities: it continues training the same network, as in the paper."""
    ds = data.load_dataset("digits", "train", max_images=300)
    est = scan.SCAN(10, pretext_epochs=1, scan_epochs=2, batch_size=64, width=8, n_heads=2)
    feats = est.pretext(ds.x)
    probs = est.cluster(ds.x, feats, scan.mine_neighbours(feats, 5))
    network = est.selflabel_network(ds.x)
    np.testing.assert_allclose(network.predict(ds.x.astype("float32"), verbose=0), probs, atol=2e-4)


def test_over_clustering_merges_back_to_k_and_self_labeling_starts_from_the_merged_clusters():
    """overcluster=2: the SCAN heads have 2K clusters, merged into K by neighbour links; the self-labeling
    network (kept head + a frozen merge layer) gives at first the merged probabilities."""
    ds = data.load_dataset("digits", "train", max_images=600)
    est = ScanHog(10, overcluster=2, scan_epochs=30, batch_size=64, n_heads=2)
    feats = est.pretext(ds.x)
    probs = est.cluster(ds.x, feats, scan.mine_neighbours(feats, 10))
    assert est.scan_model_.heads[0].units == 20 and probs.shape == (600, 10)
    groups = est.log_["merged_groups"]
    assert len(groups) == 10 and sorted(sum(groups, [])) == list(range(20))  # a partition of the 20 clusters
    network = est.selflabel_network(ds.x)
    np.testing.assert_allclose(network.predict(est._selflabel_inputs(ds.x), verbose=0), probs, atol=2e-4)
    assert metrics.hungarian_accuracy(ds.y, probs.argmax(1)) > 0.6  # chance 0.1
    with pytest.raises(ValueError, match="overcluster"):
        ScanHog(10, overcluster=0)


@pytest.mark.parametrize("select", ["confident", "reliable"])
def test_the_cnn_student_distils_scan_hog_into_a_classifier_of_pixels(select):
    ds = data.load_dataset("digits", "train", max_images=600)
    est = ScanHog(10, scan_epochs=40, batch_size=64, threshold=0.9, selflabel_rounds=1, selflabel_min_steps=120,
                  student="cnn", student_width=8, student_epochs=6, student_rounds=1, student_select=select)
    est.fit(ds.x)
    if select == "reliable":  # round 0 trained on the samples most of whose neighbours share their cluster
        assert 0 < est.log_["student_reliable"] < len(ds.x)
    steps = est.predict_steps(ds.x)
    assert "student" in steps and est.student_ is not None
    assert est.student_.input_shape[1:] == ds.x.shape[1:]  # the student reads pixels, not HOG
    np.testing.assert_array_equal(est.predict(ds.x), steps["student"])
    assert metrics.hungarian_accuracy(ds.y, steps["student"]) > 0.5  # chance 0.1


def test_refine_distils_again_and_student_scan_clusters_the_students_embedding():
    """refine=1: neighbours mined in HOG + the student's features, then steps 3-4 and a fresh student again;
    student_scan: then the SCAN step on that student's own embedding, which gives the final clustering."""
    ds = data.load_dataset("digits", "train", max_images=600)
    est = ScanHog(10, scan_epochs=40, batch_size=64, threshold=0.9, selflabel_rounds=1, selflabel_min_steps=120,
                  student="cnn", student_width=8, student_epochs=6, student_rounds=1, refine=1, student_scan=True,
                  views=2)
    est.fit(ds.x)
    first = est.log_["passes"][0]
    assert "student_confident" in first and "scan_head_losses" in first  # the first pass's log is kept
    assert 0.0 < est.log_["refine_neighbours_kept"] < 1.0  # new neighbours, some of them the old ones
    assert est.first_student_ is not None and est.student_ is not est.first_student_  # a fresh student
    assert len(est.log_["student_scan_head_losses"]) == est.params["n_heads"]
    assert 0.0 < est.log_["student_scan_neighbours_kept"] < 1.0  # the student's neighbours are not HOG's
    steps = est.predict_steps(ds.x)
    assert list(steps)[:2] == ["pretext+kmeans", "first student"] and list(steps)[-2:] == ["student", "student scan"]
    np.testing.assert_array_equal(est.predict(ds.x), steps["student scan"])
    assert est.predict_proba(ds.x[:5]).shape == (5, 10)
    for step in ("student", "student scan"):
        assert metrics.hungarian_accuracy(ds.y, steps[step]) > 0.5, step  # chance 0.1
    with pytest.raises(ValueError, match="refine"):
        ScanHog(10, refine=1)  # no student to mine in
    with pytest.raises(ValueError, match="student_scan"):
        ScanHog(10, student_scan=True)


def test_student_finetune_trains_the_student_end_to_end_with_the_scan_loss():
    """student_finetune: the CNN student's network, its softmax the one head, trained on augmented (image,
    neighbour) pairs with the SCAN loss; it starts from the student's clustering and lowers the SCAN loss."""
    ds = data.load_dataset("digits", "train", max_images=600)
    est = ScanHog(10, scan_epochs=40, batch_size=64, threshold=0.9, selflabel_rounds=1, selflabel_min_steps=120,
                  student="cnn", student_width=8, student_epochs=6, student_rounds=1, student_finetune=3)
    est.fit(ds.x)
    before, after = est.log_["student_finetune_loss"]
    assert np.isfinite(after) and after < before  # the SCAN loss on every (image, neighbour) pair goes down
    assert 0.0 < est.log_["student_finetune_neighbours_kept"] < 1.0  # mined in HOG + the student's features
    steps = est.predict_steps(ds.x)
    assert list(steps)[-2:] == ["student", "student finetuned"]
    np.testing.assert_array_equal(est.predict(ds.x), steps["student finetuned"])
    assert est.finetuned_.encoder is not selflabel.student_parts(est.student_)[0]  # a copy: the student stays
    assert metrics.hungarian_accuracy(ds.y, steps["student finetuned"]) > 0.5  # chance 0.1
    with pytest.raises(ValueError, match="student_finetune"):
        ScanHog(10, student_finetune=2)  # no student to fine-tune
    with pytest.raises(ValueError, match="student_finetune"):
        ScanHog(10, student="cnn", student_finetune=2, student_scan=True)


def test_merge_pairs_joins_only_closed_pairs_of_the_last_steps_clusters():
    """merge_pairs: the last step's clusters joined where their mined neighbours' links are closed
    (`clustering.merge_linked_pairs`). On digits' ten SCAN clusters nothing is joined; two clusters whose members'
    neighbours all lie in the other are."""
    ds = data.load_dataset("digits", "train", max_images=600)
    est = ScanHog(10, scan_epochs=40, batch_size=64, threshold=0.9, selflabel_rounds=1, selflabel_min_steps=120,
                  merge_pairs=True)
    est.fit(ds.x)
    steps = est.predict_steps(ds.x)
    assert list(steps)[-2:] == ["selflabel", "merged pairs"] and est.log_["merge_pairs_joined"] == []
    np.testing.assert_array_equal(steps["merged pairs"], steps["selflabel"])
    assert metrics.hungarian_accuracy(ds.y, est.predict(ds.x)) > 0.6  # chance 0.1
    labels = steps["selflabel"]
    a, b = np.bincount(labels, minlength=10).argsort()[-2:]  # the two largest clusters made one closed group
    pool = np.flatnonzero(np.isin(labels, [a, b]))
    est.neighbours_ = est.neighbours_.copy()
    est.neighbours_[pool] = np.random.default_rng(0).choice(pool, est.neighbours_[pool].shape)
    est.merge_pairs(ds.x)
    assert [sorted(j[:2]) for j in est.log_["merge_pairs_joined"]] == [sorted([a, b])]
    merged = est.predict(ds.x)
    assert len(np.unique(merged)) == len(np.unique(labels)) - 1
    np.testing.assert_array_equal(merged[pool], min(a, b))  # the later one joined into the earlier
    with pytest.raises(ValueError, match="blur"):
        ScanHog(10, blur=1.5)


def test_scan_hog_cnn_fine_tunes_its_student_on_every_profile_and_scan_hog_does_not():
    """One name, one algorithm: every profile of scan-hog+cnn runs the SCAN fine-tune, the blurred views and the
    central HOG (chosen by `select`) and joins closed pairs of clusters; the profiles change its size only."""
    from course_lib import runtime
    from course_lib.methods.scan_hog import ScanHogCNN

    keys = ("student_finetune", "blur", "merge_pairs", "centre_cell")
    for name in ("quick", "standard", "full"):
        params = ScanHogCNN.for_profile(43, runtime.get_profile(name)).params
        assert tuple(params[k] for k in keys) == (3, 0.5, True, 2)
        params = ScanHog.for_profile(43, runtime.get_profile(name)).params
        assert tuple(params[k] for k in keys) == (0, 0.0, False, 0)
    params = ScanHogCNN.for_smoke(43).params
    assert tuple(params[k] for k in keys) == (1, 0.5, True, 2)


def test_notebook_06_writes_out_the_librarys_scan_model():
    """Notebook 06 defines SCANModel in a cell a student can change; it must be the library's, line for line."""
    import inspect
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "06_scan.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    written = [c for c in cells if c.startswith("class SCANModel(")]
    library = "".join(line for line in inspect.getsource(scan.SCANModel).splitlines(True) if not line.startswith("@"))
    assert len(written) == 1 and written[0].strip() == library.strip()


def test_self_labeling_fine_tunes_the_cnn_on_images():
    """`scan` on a CPU: the SCAN step on the frozen SimCLR embedding, then self-labeling trains the whole network
    on strongly augmented images; predictions then come from that network."""
    ds = data.load_dataset("digits", "train", max_images=400)
    est = scan.SCAN(10, pretext_epochs=2, width=8, batch_size=64, scan_epochs=40, threshold=0.5,
                    selflabel_rounds=2, selflabel_epochs=1, selflabel_min_steps=10)
    est.fit(ds.x)
    assert len(est.log_["selflabel_confident"]) >= 2  # at least one round trained (kept or undone)
    if est.classifier_ is not None:
        assert est.classifier_.input_shape[1:] == ds.x.shape[1:]  # a network of pixels, not of features
        np.testing.assert_array_equal(est.predict(ds.x), est.predict_steps(ds.x)["selflabel"])
    else:
        assert "selflabel_stop" in est.log_


def test_scan_hog_with_hue_bins_describes_colour_and_keeps_hue_in_the_views():
    x = data.load_dataset("synthetic-signs", "train", max_images=16, n_images=16).x
    est, plain = ScanHog(5, hue_bins=8), ScanHog(5)
    assert est._describe(x).shape[1] == plain._describe(x).shape[1] + 8
    assert not any("color_jitter" in layer.name for layer in est._augmenter(x).layers)
    assert any("color_jitter" in layer.name for layer in plain._augmenter(x).layers)


def test_scan_hog_hog_cell_sets_the_grain_of_the_descriptor():
    x = data.load_dataset("synthetic-signs", "train", max_images=4, n_images=4).x  # 32 px, 28 after the border
    assert ScanHog(5)._describe(x).shape[1] == 6 * 6 * 2 * 2 * 9  # 7 x 7 cells of 4 px
    assert ScanHog(5, hog_cell=7)._describe(x).shape[1] == 3 * 3 * 2 * 2 * 9  # 4 x 4 cells of 7 px


def test_scan_hog_centre_cell_joins_a_finer_hog_of_the_central_half():
    """centre_cell: a second HOG, of the central half only (8..24 of 32 px) at 2-px cells, joined to the HOG at
    equal weight, each part whitened to unit length; the border does not move it; new images described alike."""
    x = data.load_dataset("synthetic-signs", "train", max_images=96, n_images=96).x
    est = ScanHog(5, centre_cell=2, views=1)
    raw = est._describe(x[:4])
    assert raw.shape[1] == 6 * 6 * 2 * 2 * 9 + 7 * 7 * 2 * 2 * 9  # 7 x 7 cells of 4 px; the centre's 8 x 8 of 2 px
    framed = x[:4].copy()
    framed[:, :8], framed[:, 24:] = 0, 255  # the top and bottom quarters changed, the centre kept
    centre = est._centre_hog(framed)
    np.testing.assert_array_equal(centre, raw[:, -centre.shape[1]:])
    f = est.pretext(x)
    assert f.shape == (96, 128) and est.view_features_.shape == (1, 96, 128)
    np.testing.assert_allclose(np.sum(f[:, 64:] ** 2, axis=1), 0.5, atol=1e-4)  # equal weight: half of each vector
    np.testing.assert_allclose(est.features(x[:10]), f[:10], atol=1e-4)
    for bad in (dict(centre_cell=-2), dict(centre_cell=2, ae_weight=0.5)):
        with pytest.raises(ValueError, match="centre_cell"):
            ScanHog(5, **bad)


def test_scan_hog_joins_autoencoder_codes_to_the_hog_and_describes_new_images_alike():
    x = data.load_dataset("synthetic-signs", "train", max_images=96, n_images=96).x
    est = ScanHog(5, ae_weight=0.5, ae_epochs=1, views=1)
    f = est.pretext(x)
    assert f.shape == (96, 64 + 64) and est.view_features_.shape == (1, 96, 128)
    assert est.log_["autoencoder_seconds"] > 0 and "color_jitter" not in str([l.name for l in est._augmenter(x).layers])
    # the second 64 columns are the codes' part, at half the HOG's length: 1 / 1.25 of each unit vector's square
    np.testing.assert_allclose(np.sum(f[:, 64:] ** 2, axis=1), 0.25 / 1.25, atol=1e-4)
    np.testing.assert_allclose(est.features(x[:10]), f[:10], atol=1e-4)  # new images: the same two pipelines
    with pytest.raises(ValueError, match="ae_weight"):
        ScanHog(5, ae_weight=-1)
