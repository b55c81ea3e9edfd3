"""The phantom: determinism, clinical counts, geometry, findings where recorded, mimics in every class."""
import numpy as np
import pytest
from scipy import ndimage

from tfbonemet.data.phantom import CLASS_NAMES, DIFFICULTIES, SMALL_SHAPE, BoneScanPhantom

MET = CLASS_NAMES.index("metastasis")


@pytest.fixture(scope="module")
def phantom():
    return BoneScanPhantom(shape=SMALL_SHAPE, seed=7, class_probs=(0.25, 0.25, 0.25, 0.25))


def test_same_seed_same_study(phantom):
    a = phantom.study(3)
    b = BoneScanPhantom(shape=SMALL_SHAPE, seed=7, class_probs=(0.25, 0.25, 0.25, 0.25)).study(3)
    np.testing.assert_array_equal(a.anterior, b.anterior)
    np.testing.assert_array_equal(a.posterior, b.posterior)
    assert a.lesions == b.lesions and a.mimics == b.mimics and a.label == b.label


def test_other_seed_other_study(phantom):
    other = BoneScanPhantom(shape=SMALL_SHAPE, seed=8).study(3)
    assert not np.array_equal(phantom.study(3).anterior, other.anterior)


def test_default_matrix_and_clinical_counts():
    phantom = BoneScanPhantom(seed=1)
    totals = []
    for i in range(3):
        study = phantom.study(i)
        assert study.anterior.shape == study.posterior.shape == (1024, 256)
        assert study.anterior.dtype == study.posterior.dtype == np.uint16
        totals += [study.anterior.sum(), study.posterior.sum()]
        # Poisson counting: integer counts with a noisy low range
        assert len(np.unique(study.anterior[study.anterior < 20])) > 10
    # clinical whole-body views: about 0.5-2.5 million counts each
    assert all(0.45e6 < t < 2.8e6 for t in totals), totals


@pytest.mark.parametrize("shape", [(64, 16), (256, 64)])
def test_small_matrices_render(shape):
    study = BoneScanPhantom(shape=shape, seed=2).study(0, label=MET)
    assert study.anterior.shape == shape and study.anterior.sum() > 0


def test_posterior_is_mirrored_anatomy(phantom):
    """Mirroring the posterior view back aligns the skeleton with the anterior view."""
    study = phantom.study(0, label=0)
    ant = ndimage.gaussian_filter(study.anterior.astype(float), 2)
    post = ndimage.gaussian_filter(study.posterior.astype(float), 2)
    assert np.corrcoef(ant.ravel(), post[:, ::-1].ravel())[0, 1] > 0.7
    assert np.corrcoef(ant.ravel(), post.ravel())[0, 1] < np.corrcoef(ant.ravel(), post[:, ::-1].ravel())[0, 1]


def test_depth_attenuation_differs_by_view(phantom):
    """The spine (posterior in the body) is relatively brighter in the posterior view, the sternum in the anterior."""
    study = phantom.study(0, label=0, noise=False)
    row, col = (int(v) for v in study.landmarks["T10"])
    spine = (slice(row - 3, row + 4), slice(col - 2, col + 3))
    ratio_ant = study.anterior[spine].sum() / study.anterior.sum()
    ratio_post = study.posterior[:, ::-1][spine].sum() / study.posterior.sum()
    assert ratio_post > 1.2 * ratio_ant


def test_findings_are_optional_extras_on_the_same_study(phantom):
    """Another label keeps the body, mimics and acquisition: only the class's findings differ."""
    with_met, without = phantom.study(5, label=MET), phantom.study(5, label=0)
    assert with_met.mimics == without.mimics
    assert with_met.lesions and not without.lesions


def test_metastases_are_brighter_in_their_boxes(phantom):
    checked = 0
    for index in range(6):
        study = phantom.study(index, label=MET, noise=False)
        normal = phantom.study(index, label=0, noise=False)
        for lesion in study.lesions:
            for view in ("anterior", "posterior"):
                y0, x0, y1, x1 = getattr(lesion, f"box_{view}")
                h, w = study.anterior.shape
                assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w, (lesion.site, view)
                region = (slice(y0, y1), slice(x0, x1))
                assert getattr(study, view)[region].max() > getattr(normal, view)[region].max(), (lesion.site, view)
                checked += 1
    assert checked >= 10


def test_metastasis_range_from_one_faint_focus_to_many():
    phantom = BoneScanPhantom(shape=(64, 16), seed=3)
    found = [phantom.study(i, label=MET).lesions for i in range(40)]
    counts = [len(f) for f in found]
    contrasts = [lesion.intensity for f in found for lesion in f]
    sizes = [2 * lesion.radius_mm for f in found for lesion in f]
    assert min(counts) == 1 and max(counts) >= 6
    assert 1.5 <= min(contrasts) < 1.8 and max(contrasts) > 3.5 and max(contrasts) <= 5.0
    assert 8.0 <= min(sizes) and max(sizes) <= 30.0


def test_mimics_appear_in_every_class_and_are_not_lesions():
    phantom = BoneScanPhantom(shape=(64, 16), seed=4)
    kinds = {name: set() for name in CLASS_NAMES}
    for i in range(60):
        study = phantom.study(i, label=i % 4)
        kinds[study.class_name] |= {m.kind for m in study.mimics}
        if study.label == 0:
            assert study.lesions == ()
    assert {"degenerative", "fracture", "injection", "urine"} <= kinds["normal"]
    assert all(len(k) >= 3 for k in kinds.values()), kinds
    assert not {"metastasis", "arthritis", "thyroid"} & set().union(*kinds.values())


def test_rib_fractures_lie_in_a_line_on_consecutive_ribs():
    phantom = BoneScanPhantom(shape=(64, 16), seed=5)
    lines = [[m for m in phantom.study(i).mimics if m.kind == "fracture"] for i in range(60)]
    lines = [line for line in lines if line]
    assert lines
    for line in lines:
        ribs = sorted(int(m.site[3:].split("_")[0]) for m in line)
        assert len(ribs) >= 2 and ribs == list(range(ribs[0], ribs[0] + len(ribs)))
        assert len({m.site.split("_")[1] for m in line}) == 1  # one side


def test_posterior_box_is_mirror_of_anterior(phantom):
    study = phantom.study(2, label=MET)
    w = study.anterior.shape[1]
    for lesion in study.lesions + study.mimics:
        a, p = lesion.box_anterior, lesion.box_posterior
        assert a[0] == p[0] and a[2] == p[2]
        assert abs((a[1] + a[3]) / 2 - (w - (p[1] + p[3]) / 2)) <= 2


def test_class_specific_findings(phantom):
    arthritis = phantom.study(1, label=CLASS_NAMES.index("arthritis"))
    thyroid = phantom.study(1, label=CLASS_NAMES.index("thyroid_carcinoma"), noise=False)
    normal = phantom.study(1, label=0, noise=False)
    joints = {lesion.site.rsplit("_", 1)[0] for lesion in arthritis.lesions}
    sides = {lesion.site.rsplit("_", 1)[1] for lesion in arthritis.lesions}
    assert joints and sides == {"left", "right"}  # symmetric periarticular uptake
    assert {lesion.site for lesion in thyroid.lesions} == {"neck"}
    y0, x0, y1, x1 = thyroid.lesions[0].box_anterior
    assert thyroid.anterior[y0:y1, x0:x1].sum() > 1.5 * normal.anterior[y0:y1, x0:x1].sum()


def test_difficulty_changes_contrast():
    contrast = {}
    for name in DIFFICULTIES:
        phantom = BoneScanPhantom(shape=(64, 16), seed=6, difficulty=name)
        contrast[name] = np.median([lesion.intensity for i in range(15) for lesion in phantom.study(i, label=MET).lesions])
    assert contrast["easy"] > contrast["realistic"] > contrast["hard"]


def test_patient_variation(phantom):
    a, b = phantom.study(0, label=0, noise=False), phantom.study(1, label=0, noise=False)
    assert a.landmarks["T10"] != b.landmarks["T10"]
    assert not np.array_equal(a.body_mask, b.body_mask)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="too small"):
        BoneScanPhantom(shape=(10, 10))
    with pytest.raises(ValueError, match="sum to 1"):
        BoneScanPhantom(class_probs=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="difficulty"):
        BoneScanPhantom(difficulty="impossible")
