import numpy as np
import pytest
from scipy import ndimage

from tfbonemet.data.phantom import CLASS_NAMES, SMALL_SHAPE, BoneScanPhantom


@pytest.fixture(scope="module")
def phantom():
    return BoneScanPhantom(shape=SMALL_SHAPE, seed=7, class_probs=(0.25, 0.25, 0.25, 0.25))


def test_same_seed_same_study(phantom):
    a = phantom.study(3)
    b = BoneScanPhantom(shape=SMALL_SHAPE, seed=7, class_probs=(0.25, 0.25, 0.25, 0.25)).study(3)
    np.testing.assert_array_equal(a.anterior, b.anterior)
    np.testing.assert_array_equal(a.posterior, b.posterior)
    assert a.lesions == b.lesions and a.label == b.label


def test_other_seed_other_study(phantom):
    other = BoneScanPhantom(shape=SMALL_SHAPE, seed=8).study(3)
    assert not np.array_equal(phantom.study(3).anterior, other.anterior)


def test_default_matrix_and_counts():
    study = BoneScanPhantom(seed=1).study(0)
    assert study.anterior.shape == study.posterior.shape == (1024, 256)
    assert study.anterior.dtype == np.uint16
    # clinical whole-body views hold on the order of a million counts
    assert 3e5 < study.anterior.sum() < 5e6
    # Poisson counting: integer counts, and a noisy background (many distinct low values)
    assert len(np.unique(study.anterior[study.anterior < 20])) > 10


def test_posterior_is_mirrored_anatomy(phantom):
    """Mirroring the posterior view back aligns the skeleton with the anterior view."""
    study = phantom.study(0, label=0)
    ant = ndimage.gaussian_filter(study.anterior.astype(float), 2)
    post = ndimage.gaussian_filter(study.posterior.astype(float), 2)
    aligned = np.corrcoef(ant.ravel(), post[:, ::-1].ravel())[0, 1]
    assert aligned > 0.7


def test_depth_attenuation_differs_by_view(phantom):
    """The lumbar spine (posterior in the body) is relatively brighter in the posterior view."""
    study = phantom.study(0, label=0)
    h, w = study.anterior.shape
    spine = (slice(int(h * 0.33), int(h * 0.40)), slice(w // 2 - 3, w // 2 + 3))
    ratio_ant = study.anterior[spine].sum() / study.anterior.sum()
    ratio_post = study.posterior[spine[0], ::-1][:, spine[1]].sum() / study.posterior.sum()
    assert ratio_post > 1.1 * ratio_ant


def test_metastasis_hot_spots_at_recorded_sites(phantom):
    study = phantom.study(5, label=CLASS_NAMES.index("metastasis"))
    normal = phantom.study(5, label=0)  # same body, no findings
    assert study.is_metastatic and len(study.lesions) >= 1
    for lesion in study.lesions:
        for view, box in (("anterior", lesion.box_anterior), ("posterior", lesion.box_posterior)):
            y0, x0, y1, x1 = (max(v, 0) for v in box)
            with_lesion = getattr(study, view)[y0:y1, x0:x1].astype(float).sum()
            without = getattr(normal, view)[y0:y1, x0:x1].astype(float).sum()
            assert with_lesion > 1.3 * without, (lesion.site, view)


def test_posterior_box_is_mirror_of_anterior(phantom):
    study = phantom.study(2, label=1)
    w = study.anterior.shape[1]
    for lesion in study.lesions:
        a, p = lesion.box_anterior, lesion.box_posterior
        assert a[0] == p[0] and a[2] == p[2]
        assert abs((a[1] + a[3]) / 2 - (w - (p[1] + p[3]) / 2)) <= 2


def test_class_specific_findings(phantom):
    arthritis = phantom.study(1, label=CLASS_NAMES.index("arthritis"))
    thyroid = phantom.study(1, label=CLASS_NAMES.index("thyroid_carcinoma"))
    normal = phantom.study(1, label=0)
    assert normal.lesions == ()
    joints = {lesion.site.rsplit("_", 1)[0] for lesion in arthritis.lesions}
    sides = {lesion.site.rsplit("_", 1)[1] for lesion in arthritis.lesions}
    assert joints and sides == {"left", "right"}  # symmetric periarticular uptake
    assert {lesion.site for lesion in thyroid.lesions} == {"neck"}
    y0, x0, y1, x1 = thyroid.lesions[0].box_anterior
    assert thyroid.anterior[y0:y1, x0:x1].sum() > 1.5 * normal.anterior[y0:y1, x0:x1].sum()


def test_patient_variation(phantom):
    a, b = phantom.study(0, label=0), phantom.study(1, label=0)
    rows_a = np.nonzero(a.anterior.sum(axis=1) > a.anterior.sum(axis=1).max() * 0.05)[0]
    rows_b = np.nonzero(b.anterior.sum(axis=1) > b.anterior.sum(axis=1).max() * 0.05)[0]
    assert (rows_a[0], rows_a[-1]) != (rows_b[0], rows_b[-1]) or a.anterior.sum() != b.anterior.sum()


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="too small"):
        BoneScanPhantom(shape=(10, 10))
    with pytest.raises(ValueError, match="sum to 1"):
        BoneScanPhantom(class_probs=(0.5, 0.5, 0.5, 0.5))
