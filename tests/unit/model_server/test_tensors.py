"""model_server/tensors.py: decoding and validating ModelInfer requests, encoding replies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.tensors import (
    OUTPUT_NAME,
    PIXELS,
    TensorError,
    decode_infer_request,
    encode_infer_response,
)

MAX_BATCH = 8
LAYOUTS = {"flat": [PIXELS], "image": [28, 28]}


def make_request(
    pixels: np.ndarray,
    *,
    datatype: str = "FP32",
    shape: list[int] | None = None,
    raw: bool = False,
    name: str = "input",
) -> pb.ModelInferRequest:
    """A request carrying `pixels` (already in the datatype's scale) as one input."""
    request = pb.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(
        name=name, datatype=datatype, shape=list(pixels.shape) if shape is None else shape
    )
    if raw:
        dtype = "<f4" if datatype == "FP32" else "u1"
        request.raw_input_contents.append(np.ascontiguousarray(pixels, dtype=dtype).tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(pixels.ravel().tolist())
    else:
        tensor.contents.uint_contents.extend(pixels.ravel().astype(int).tolist())
    return request


def decode(request: pb.ModelInferRequest):
    return decode_infer_request(request, max_batch=MAX_BATCH)


def digits(batch: int, layout: str = "flat", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=[batch, *LAYOUTS[layout]], dtype=np.uint8)


# --- valid requests ----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "image"])
@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_decodes_every_accepted_form_to_unit_fp32(layout: str, raw: bool, datatype: str) -> None:
    images = digits(3, layout)
    expected = images.reshape(3, PIXELS).astype(np.float32) / 255.0
    sent = images if datatype == "UINT8" else images.astype(np.float32) / 255.0

    decoded = decode(make_request(sent, datatype=datatype, raw=raw))

    assert decoded.raw is raw
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.shape == (3, PIXELS)
    np.testing.assert_allclose(decoded.pixels, expected, rtol=0, atol=1e-7)


def test_accepts_max_batch_and_the_requested_output_by_name() -> None:
    request = make_request(np.zeros((MAX_BATCH, PIXELS), np.float32))
    request.outputs.add(name=OUTPUT_NAME)
    assert decode(request).pixels.shape == (MAX_BATCH, PIXELS)


def test_accepts_pixels_at_both_ends_of_the_unit_range() -> None:
    pixels = np.zeros((1, PIXELS), np.float32)
    pixels[0, 1] = 1.0
    assert decode(make_request(pixels)).pixels.max() == 1.0


# --- malformed requests: table ---------------------------------------------------------


def _request(**changes) -> pb.ModelInferRequest:
    """A valid FP32 [1, 784] typed request, then `changes` applied to it."""
    request = make_request(np.full((1, PIXELS), 0.5, np.float32))
    tensor = request.inputs[0]
    for key, value in changes.items():
        if key == "no_inputs":
            del request.inputs[:]
        elif key == "second_input":
            request.inputs.add().CopyFrom(tensor)
        elif key == "also_raw":
            request.raw_input_contents.append(value)
        elif key == "extra_field":
            getattr(tensor.contents, value).append(1)
        elif key == "output":
            request.outputs.add(name=value)
        elif key == "shape":
            del tensor.shape[:]
            tensor.shape.extend(value)
        elif key == "value":
            tensor.contents.fp32_contents[7] = value
        elif key == "drop_data":
            tensor.ClearField("contents")
        else:
            setattr(tensor, key, value)
    return request


def _raw(data: bytes, *, datatype: str = "FP32", shape=(1, PIXELS), entries: int = 1):
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="input", datatype=datatype, shape=list(shape))
    request.raw_input_contents.extend([data] * entries)
    return request


def _uint8_typed(values: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="mnist")
    tensor = request.inputs.add(name="input", datatype="UINT8", shape=[1, PIXELS])
    tensor.contents.uint_contents.extend(values)
    return request


MALFORMED = {
    "no input": (_request(no_inputs=True), ["exactly 1 input", "got 0"]),
    "two inputs": (_request(second_input=True), ["exactly 1 input", "got 2"]),
    "wrong name": (_request(name="images"), ["'input'", "'images'"]),
    "wrong datatype": (_request(datatype="INT32"), ["FP32 or UINT8", "'INT32'"]),
    "empty datatype": (_request(datatype=""), ["FP32 or UINT8", "''"]),
    "no dims": (_request(shape=[]), ["[N, 784] or [N, 28, 28]", "got []"]),
    "rank 1": (_request(shape=[784]), ["[N, 784] or [N, 28, 28]", "got [784]"]),
    "wrong width": (_request(shape=[1, 783]), ["[N, 784]", "got [1, 783]"]),
    "transposed": (_request(shape=[784, 1]), ["[N, 784]", "got [784, 1]"]),
    "wrong image": (_request(shape=[1, 28, 27]), ["[N, 28, 28]", "got [1, 28, 27]"]),
    "rank 4": (_request(shape=[1, 1, 28, 28]), ["[N, 28, 28]", "got [1, 1, 28, 28]"]),
    "zero batch": (_request(shape=[0, PIXELS]), ["N >= 1", "[0, 784]"]),
    "negative batch": (_request(shape=[-1, PIXELS]), ["N >= 1", "[-1, 784]"]),
    "batch over max": (
        _raw(bytes(4 * PIXELS * (MAX_BATCH + 1)), shape=(MAX_BATCH + 1, PIXELS)),
        [f"N={MAX_BATCH + 1}", f"maximum {MAX_BATCH}"],
    ),
    "too few elements": (_request(shape=[2, PIXELS]), ["expected 1568 elements", "got 784"]),
    "no data": (_request(drop_data=True), ["no data", "fp32_contents or raw_input_contents"]),
    "wrong typed field": (
        _request(datatype="UINT8"),
        ["UINT8 data goes in contents.uint_contents", "got fp32_contents"],
    ),
    "two typed fields": (
        _request(extra_field="int_contents"),
        ["contents.fp32_contents", "int_contents"],
    ),
    "typed and raw": (_request(also_raw=bytes(4 * PIXELS)), ["both", "raw_input_contents"]),
    "NaN": (_request(value=float("nan")), ["finite", "1 NaN/inf"]),
    "inf": (_request(value=float("inf")), ["finite", "1 NaN/inf"]),
    "above 1": (_request(value=255.0), ["0..1", "255", "UINT8"]),
    "negative": (_request(value=-0.5), ["0..1", "-0.5"]),
    "unknown output": (_request(output="logits"), ["'logits'", f"'{OUTPUT_NAME}'"]),
    "raw short": (_raw(bytes(4 * PIXELS - 1)), ["expected 3136 bytes", "got 3135"]),
    "raw long": (_raw(bytes(4 * PIXELS + 4)), ["expected 3136 bytes", "got 3140"]),
    "raw uint8 sized as fp32": (
        _raw(bytes(4 * PIXELS), datatype="UINT8"),
        ["expected 784 bytes", "got 3136"],
    ),
    "raw two entries": (_raw(bytes(4 * PIXELS), entries=2), ["1 raw_input_contents", "got 2"]),
    "raw NaN": (
        _raw(np.full(PIXELS, np.nan, "<f4").tobytes()),
        ["finite", "784 NaN/inf"],
    ),
    "uint8 over 255": (_uint8_typed([256] + [0] * (PIXELS - 1)), ["0..255", "256"]),
    "uint8 short": (_uint8_typed([0] * 10), ["expected 784 elements", "got 10"]),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_rejects_malformed_request_saying_what_was_expected(case: str) -> None:
    request, fragments = MALFORMED[case]
    with pytest.raises(TensorError) as caught:
        decode(request)
    for fragment in fragments:
        assert fragment in str(caught.value)


# --- properties --------------------------------------------------------------------

valid_forms = st.tuples(
    st.integers(1, MAX_BATCH),
    st.sampled_from(list(LAYOUTS)),
    st.sampled_from(["FP32", "UINT8"]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)


@given(valid_forms)
@settings(max_examples=80, deadline=None)
def test_any_valid_request_decodes_to_the_sent_pixels(form) -> None:
    batch, layout, datatype, raw, seed = form
    images = digits(batch, layout, seed)
    sent = images if datatype == "UINT8" else images.astype(np.float32) / 255.0

    decoded = decode(make_request(sent, datatype=datatype, raw=raw))

    assert decoded.raw is raw
    assert decoded.pixels.shape == (batch, PIXELS)
    np.testing.assert_allclose(
        decoded.pixels, images.reshape(batch, PIXELS) / np.float32(255), atol=1e-7
    )


@given(st.lists(st.integers(-3, 2000), max_size=5))
@settings(max_examples=200, deadline=None)
def test_any_other_shape_is_rejected(shape: list[int]) -> None:
    valid = (len(shape) == 2 and shape[1] == PIXELS) or (len(shape) == 3 and shape[1:] == [28, 28])
    if valid and 1 <= shape[0] <= MAX_BATCH:
        return
    request = pb.ModelInferRequest()
    request.inputs.add(name="input", datatype="FP32", shape=shape)
    request.raw_input_contents.append(bytes(4 * PIXELS))
    with pytest.raises(TensorError, match=r"shape|batch size|N >= 1"):
        decode(request)


@given(st.integers(1, MAX_BATCH), st.sampled_from(["FP32", "UINT8"]), st.integers(0, 4 * 4000))
@settings(max_examples=200, deadline=None)
def test_raw_byte_length_must_match_the_shape(batch: int, datatype: str, length: int) -> None:
    itemsize = 4 if datatype == "FP32" else 1
    request = _raw(bytes(length), datatype=datatype, shape=(batch, PIXELS))
    if length == batch * PIXELS * itemsize:
        assert decode(request).pixels.shape == (batch, PIXELS)
    else:
        with pytest.raises(TensorError, match=f"expected {batch * PIXELS * itemsize} bytes"):
            decode(request)


CONTENT_FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]


@st.composite
def arbitrary_requests(draw) -> pb.ModelInferRequest:
    """Requests of any form, mostly nonsense: random names, types, shapes and data."""
    request = pb.ModelInferRequest(model_name="mnist")
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["input", "x", ""])),
            datatype=draw(st.sampled_from(["FP32", "UINT8", "FP64", "INT32", "BYTES", "fp32"])),
            shape=draw(
                st.lists(st.sampled_from([-1, 0, 1, 2, 27, 28, 783, 784, 2**40]), max_size=4)
            ),
        )
        for field in draw(st.lists(st.sampled_from(CONTENT_FIELDS), max_size=2, unique=True)):
            size = draw(st.sampled_from([1, PIXELS, 2 * PIXELS]))
            values = {
                "bool_contents": [True] * size,
                "bytes_contents": [b"x"] * size,
                "fp32_contents": [draw(st.floats(width=32))] * size,
                "fp64_contents": [draw(st.floats())] * size,
            }.get(field, [draw(st.integers(0, 300))] * size)
            getattr(tensor.contents, field).extend(values)
    for _ in range(draw(st.integers(0, 2))):
        size = draw(st.sampled_from([0, 1, PIXELS, 4 * PIXELS, 8 * PIXELS]))
        request.raw_input_contents.append(draw(st.binary(min_size=size, max_size=size)))
    for _ in range(draw(st.integers(0, 1))):
        request.outputs.add(name=draw(st.sampled_from([OUTPUT_NAME, "other"])))
    return request


@given(arbitrary_requests())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_request_decodes_to_unit_pixels_or_raises_tensor_error(request) -> None:
    # Anything other than TensorError would reach the client as UNKNOWN.
    try:
        decoded = decode(request)
    except TensorError as error:
        assert str(error)
        return
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.ndim == 2 and decoded.pixels.shape[1] == PIXELS
    assert 1 <= decoded.pixels.shape[0] <= MAX_BATCH
    assert np.isfinite(decoded.pixels).all()
    assert decoded.pixels.min() >= 0.0 and decoded.pixels.max() <= 1.0


# --- encoding ----------------------------------------------------------------------


@given(st.integers(1, 50), st.booleans())
@settings(max_examples=30, deadline=None)
def test_encoded_probabilities_round_trip(batch: int, raw: bool) -> None:
    probabilities = np.random.default_rng(batch).random((batch, 10), dtype=np.float32)

    response = encode_infer_response(
        probabilities, raw=raw, model_name="mnist", model_version="1", request_id="r1"
    )

    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == (OUTPUT_NAME, "FP32", [batch, 10])
    assert (response.model_name, response.model_version, response.id) == ("mnist", "1", "r1")
    if raw:
        assert len(output.contents.fp32_contents) == 0
        got = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    else:
        assert len(response.raw_output_contents) == 0
        got = np.array(output.contents.fp32_contents, dtype=np.float32)
    np.testing.assert_array_equal(got.reshape(batch, 10), probabilities)


def test_encode_rejects_a_wrong_output_shape() -> None:
    with pytest.raises(ValueError, match=r"\[N, 10\]"):
        encode_infer_response(
            np.zeros((2, 9), np.float32), raw=True, model_name="mnist", model_version="1"
        )
