"""The requests in docs/serving.md, checked against the exported SavedModel's signatures (no server needed)."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.tasks.export import export


@pytest.fixture(scope="module")
def saved_model(tiny_run_dir, tmp_path_factory):
    version = export(tiny_run_dir, tmp_path_factory.mktemp("serving"), fmt="savedmodel", log=lambda *_: None)
    return version, tf.saved_model.load(str(version))


@pytest.fixture(scope="module")
def study():
    s = BoneScanPhantom(shape=(200, 50), seed=4).study(0)  # not the model's 128x32: resized inside
    return {"anterior": s.anterior, "posterior": s.posterior}


def check_outputs(outputs, batch):
    assert set(outputs) == {"probabilities", "uncertainty", "label"}
    assert outputs["probabilities"].dtype == tf.float32 and outputs["probabilities"].shape == (batch, 2)
    assert outputs["uncertainty"].dtype == tf.float32 and outputs["uncertainty"].shape == (batch,)
    assert outputs["label"].dtype == tf.int64 and outputs["label"].shape == (batch,)


def test_grpc_predict_request_matches_signature(saved_model, study):
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2",
                                      reason="tensorflow-serving-api is not installed (pip install tfbonemet[serving])")
    version, loaded = saved_model
    request = predict_pb2.PredictRequest()
    request.model_spec.name = version.parent.name
    request.model_spec.signature_name = "serving_default"
    for view, counts in study.items():
        request.inputs[view].CopyFrom(tf.make_tensor_proto(counts[np.newaxis, ..., np.newaxis].astype(np.float32)))
    signature = loaded.signatures[request.model_spec.signature_name]
    specs = signature.structured_input_signature[1]
    assert set(request.inputs) == set(specs)
    feed = {}
    for name, proto in request.inputs.items():
        assert tf.dtypes.as_dtype(proto.dtype) == specs[name].dtype
        array = tf.make_ndarray(proto)
        assert specs[name].shape.is_compatible_with(array.shape)
        feed[name] = tf.constant(array)
    check_outputs(signature(**feed), 1)


def test_rest_json_requests_match_signatures(saved_model, study):
    """Row-format REST bodies as in docs/serving.md, decoded the way TF Serving decodes them."""
    _, loaded = saved_model
    raw = json.loads(json.dumps({"instances": [{v: c[..., np.newaxis].tolist() for v, c in study.items()}]}))
    feed = {v: tf.constant([row[v] for row in raw["instances"]], tf.float32) for v in study}
    counts_out = loaded.signatures["serving_default"](**feed)
    check_outputs(counts_out, 1)

    pngs = {v: base64.b64encode(tf.io.encode_png(c[..., np.newaxis]).numpy()).decode() for v, c in study.items()}
    body = json.loads(json.dumps({"signature_name": "serving_bytes",
                                  "instances": [{v: {"b64": b} for v, b in pngs.items()}]}))
    feed = {v: tf.constant([base64.b64decode(row[v]["b64"]) for row in body["instances"]]) for v in study}
    bytes_out = loaded.signatures[body["signature_name"]](**feed)
    check_outputs(bytes_out, 1)
    np.testing.assert_allclose(bytes_out["probabilities"], counts_out["probabilities"], atol=1e-5)
