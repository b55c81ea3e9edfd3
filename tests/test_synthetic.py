"""The built-in dataset: rendered once, cached atomically, split by patient."""
import numpy as np

from tfbonemet.data import synthetic


def test_render_then_reuse_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBONEMET_CACHE", str(tmp_path))
    spec = synthetic.SyntheticSpec(num_studies=12, height=128, width=32, seed=5)
    messages = []
    first = synthetic.load_or_render(spec, log=messages.append)
    assert any("Rendering 12" in m for m in messages)
    files = list((tmp_path / "phantom").iterdir())
    assert [f.suffix for f in files] == [".npz"], "only the finished cache file remains"
    synthetic._LOADED.clear()
    messages.clear()
    second = synthetic.load_or_render(spec, log=messages.append)
    assert any("Using cached" in m for m in messages)
    np.testing.assert_array_equal(first.anterior, second.anterior)
    assert first.lesion_boxes == second.lesion_boxes
    assert second.anterior.dtype == np.uint16 and second.anterior.shape == (12, 128, 32)


def test_other_settings_other_cache_key():
    a = synthetic.SyntheticSpec(num_studies=12, seed=1)
    assert a.key() != synthetic.SyntheticSpec(num_studies=12, seed=2).key()
    assert a.key() != synthetic.SyntheticSpec(num_studies=13, seed=1).key()


def test_splits_are_patient_disjoint_and_cover_all(tmp_path, monkeypatch):
    monkeypatch.setenv("TFBONEMET_CACHE", str(tmp_path))
    arrays = synthetic.load_or_render(synthetic.SyntheticSpec(num_studies=30, height=128, width=32),
                                      log=lambda *_: None)
    parts = [arrays.select(name) for name in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == 30 and all(len(p) for p in parts)
    patients = [set(p.patient_hash) for p in parts]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
