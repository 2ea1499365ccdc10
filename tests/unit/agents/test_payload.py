"""agents/payload.py: requests built from real digits, and reading predictions back."""

import numpy as np
import pytest

from agents.payload import TensorSpec, build_payloads, predicted_classes, spec_from_metadata
from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.data import load_sample

TM = pb.ModelMetadataResponse.TensorMetadata


@pytest.fixture(scope="module")
def digits():
    return load_sample()


@pytest.mark.parametrize(
    ("datatype", "shape", "dtype"),
    [("FP32", (784,), "<f4"), ("UINT8", (784,), np.uint8), ("FP32", (28, 28), "<f4")],
)
def test_payloads_carry_real_digits_in_the_requested_encoding(digits, datatype, shape, dtype):
    spec = TensorSpec(model_name="mnist", input_datatype=datatype, image_shape=shape)
    payloads = build_payloads(digits, spec, batch_size=3, count=4, seed=1)
    assert len(payloads) == 4
    request = pb.ModelInferRequest.FromString(payloads[0].request)
    assert request.model_name == "mnist"
    assert request.inputs[0].datatype == datatype
    assert list(request.inputs[0].shape) == [3, *shape]
    data = np.frombuffer(request.raw_input_contents[0], dtype=dtype).reshape(3, -1)
    assert payloads[0].labels.shape == (3,)
    # The pixels are those of real digits with these labels.
    scale = 255.0 if datatype == "FP32" else 1.0
    pixels = np.rint(data.astype(np.float64) * scale).astype(np.uint8)
    for row, label in zip(pixels, payloads[0].labels, strict=True):
        matches = np.flatnonzero((digits.images.reshape(len(digits), -1) == row).all(axis=1))
        assert matches.size and set(digits.labels[matches]) == {label}


def test_payloads_mix_the_classes_although_the_sample_is_sorted(digits):
    spec = TensorSpec(model_name="mnist")
    labels = np.concatenate([p.labels for p in build_payloads(digits, spec, count=100)])
    assert len(set(labels.tolist())) == 10


def test_different_seeds_give_different_orders(digits):
    spec = TensorSpec(model_name="mnist")
    a = np.concatenate([p.labels for p in build_payloads(digits, spec, count=50, seed=0)])
    b = np.concatenate([p.labels for p in build_payloads(digits, spec, count=50, seed=1)])
    assert not np.array_equal(a, b)


def _response(probs: np.ndarray, raw: bool) -> bytes:
    response = pb.ModelInferResponse(model_name="mnist")
    out = response.outputs.add()
    out.name, out.datatype = "probabilities", "FP32"
    out.shape.extend(probs.shape)
    if raw:
        response.raw_output_contents.append(probs.astype("<f4").tobytes())
    else:
        out.contents.fp32_contents.extend(probs.ravel().tolist())
    return response.SerializeToString()


@pytest.mark.parametrize("raw", [True, False])
def test_predicted_classes_reads_typed_and_raw_outputs(raw):
    probs = np.eye(10, dtype=np.float32)[[3, 7, 0]]
    got = predicted_classes(_response(probs, raw), TensorSpec(model_name="mnist"))
    assert got.tolist() == [3, 7, 0]


def test_predicted_classes_names_a_missing_output():
    with pytest.raises(ValueError, match="no output named 'scores'"):
        predicted_classes(
            _response(np.eye(10)[[1]], True), TensorSpec(model_name="m", output_name="scores")
        )


def test_spec_from_metadata_picks_the_image_input():
    meta = pb.ModelMetadataResponse(
        name="digits",
        inputs=[
            TM(name="mask", datatype="BOOL", shape=[-1, 4]),
            TM(name="img", datatype="UINT8", shape=[-1, 28, 28]),
        ],
        outputs=[TM(name="logits", datatype="FP32", shape=[-1, 10])],
    )
    spec = spec_from_metadata(meta)
    assert (spec.input_name, spec.input_datatype, spec.image_shape, spec.output_name) == (
        "img",
        "UINT8",
        (28, 28),
        "logits",
    )


def test_spec_from_metadata_says_what_the_model_offers():
    meta = pb.ModelMetadataResponse(
        name="bert",
        inputs=[TM(name="ids", datatype="INT64", shape=[-1, 128])],
        outputs=[TM(name="out", datatype="FP32", shape=[-1, 2])],
    )
    with pytest.raises(ValueError, match=r"no MNIST-shaped input.*ids INT64 \[-1, 128\]"):
        spec_from_metadata(meta)
