"""Decode and validate ModelInfer requests, encode responses: numpy only, no TensorFlow.

The model takes one input, `input`: FP32 pixels scaled 0..1, or UINT8 raw pixels 0..255
(scaled here), shaped [N, 784] or [N, 28, 28], sent as typed contents (`fp32_contents`,
`uint_contents`) or as little-endian `raw_input_contents`. It answers one output,
`probabilities` FP32 [N, 10], raw when the request was raw and typed otherwise (as
Triton does). Anything else raises `TensorError`, whose message says what was expected
and what came; the server turns it into INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_server.api import grpc_predict_v2_pb2 as pb

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
PIXELS = 28 * 28
CLASSES = 10
INPUT_SHAPES = "[N, 784] or [N, 28, 28]"

# datatype -> (field of InferTensorContents that carries it, little-endian raw dtype)
_DATATYPES: dict[str, tuple[str, np.dtype]] = {
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "UINT8": ("uint_contents", np.dtype("u1")),
}


class TensorError(ValueError):
    """A request the model cannot take; the message names what was expected and what came."""


@dataclass(frozen=True)
class DecodedInput:
    """The model's input, float32 [N, 784] in 0..1, and how the reply should be encoded."""

    pixels: np.ndarray
    raw: bool


def decode_infer_request(request: pb.ModelInferRequest, *, max_batch: int) -> DecodedInput:
    """Validate `request`'s tensors (not its model name) and return the model's input."""
    _check_requested_outputs(request)
    if len(request.inputs) != 1:
        names = [t.name for t in request.inputs]
        raise TensorError(
            f"expected exactly 1 input tensor named {INPUT_NAME!r}, "
            f"got {len(request.inputs)} {names}"
        )
    tensor = request.inputs[0]
    if tensor.name != INPUT_NAME:
        raise TensorError(f"expected an input named {INPUT_NAME!r}, got {tensor.name!r}")
    if tensor.datatype not in _DATATYPES:
        raise TensorError(
            f"input {INPUT_NAME!r}: expected datatype FP32 or UINT8, got {tensor.datatype!r}"
        )
    batch = _batch_size(list(tensor.shape), max_batch)
    values = _read_values(request, tensor, batch * PIXELS)
    pixels = _to_unit_pixels(values, tensor.datatype)
    return DecodedInput(pixels=pixels.reshape(batch, PIXELS), raw=bool(request.raw_input_contents))


def encode_infer_response(
    probabilities: np.ndarray,
    *,
    raw: bool,
    model_name: str,
    model_version: str,
    request_id: str = "",
) -> pb.ModelInferResponse:
    """The reply carrying `probabilities` [N, 10]: as raw_output_contents if `raw`, else typed."""
    probabilities = np.ascontiguousarray(probabilities, dtype="<f4")
    if probabilities.ndim != 2 or probabilities.shape[1] != CLASSES:
        raise ValueError(f"probabilities must be [N, {CLASSES}], got {list(probabilities.shape)}")
    output = pb.ModelInferResponse.InferOutputTensor(
        name=OUTPUT_NAME, datatype="FP32", shape=list(probabilities.shape)
    )
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id
    )
    if raw:
        response.raw_output_contents.append(probabilities.tobytes())
    else:
        output.contents.fp32_contents.extend(probabilities.ravel().tolist())
    response.outputs.append(output)
    return response


def _check_requested_outputs(request: pb.ModelInferRequest) -> None:
    for wanted in request.outputs:
        if wanted.name != OUTPUT_NAME:
            raise TensorError(
                f"unknown output {wanted.name!r}: the model has one output {OUTPUT_NAME!r}"
            )


def _batch_size(shape: list[int], max_batch: int) -> int:
    flat = len(shape) == 2 and shape[1] == PIXELS
    image = len(shape) == 3 and shape[1:] == [28, 28]
    if not (flat or image):
        raise TensorError(f"input {INPUT_NAME!r}: expected shape {INPUT_SHAPES}, got {shape}")
    batch = shape[0]
    if batch < 1:
        raise TensorError(f"input {INPUT_NAME!r}: expected batch size N >= 1, got {shape}")
    if batch > max_batch:
        raise TensorError(
            f"input {INPUT_NAME!r}: batch size N={batch} exceeds the maximum {max_batch}"
        )
    return batch


def _read_values(
    request: pb.ModelInferRequest, tensor: pb.ModelInferRequest.InferInputTensor, count: int
) -> np.ndarray:
    """The tensor's `count` elements, from raw bytes or typed contents, unscaled."""
    field, raw_dtype = _DATATYPES[tensor.datatype]
    typed = [f.name for f, _ in tensor.contents.ListFields()]  # only non-empty fields
    where = f"input {INPUT_NAME!r} ({tensor.datatype} {list(tensor.shape)})"
    if request.raw_input_contents:
        if typed:
            raise TensorError(
                f"{where}: got both typed contents ({', '.join(typed)}) and "
                "raw_input_contents; send one or the other"
            )
        if len(request.raw_input_contents) != 1:
            raise TensorError(
                "expected 1 raw_input_contents entry (one per input), "
                f"got {len(request.raw_input_contents)}"
            )
        data = request.raw_input_contents[0]
        expected = count * raw_dtype.itemsize
        if len(data) != expected:
            raise TensorError(
                f"{where}: expected {expected} bytes of raw_input_contents "
                f"({count} elements x {raw_dtype.itemsize} bytes), got {len(data)}"
            )
        return np.frombuffer(data, dtype=raw_dtype)
    if not typed:
        raise TensorError(f"{where}: no data; expected contents.{field} or raw_input_contents")
    if typed != [field]:
        raise TensorError(
            f"{where}: {tensor.datatype} data goes in contents.{field}, got {', '.join(typed)}"
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise TensorError(
            f"{where}: expected {count} elements in contents.{field}, got {len(values)}"
        )
    if tensor.datatype == "UINT8":
        wide = np.array(values, dtype=np.uint32)
        if int(wide.max()) > 255:
            raise TensorError(
                f"{where}: UINT8 values must be 0..255, got a maximum of {int(wide.max())}"
            )
        return wide.astype(np.uint8)
    return np.array(values, dtype=np.float32)


def _to_unit_pixels(values: np.ndarray, datatype: str) -> np.ndarray:
    """float32 pixels in 0..1; FP32 values are checked, UINT8 values are scaled."""
    if datatype == "UINT8":
        return values.astype(np.float32) / np.float32(255.0)
    finite = np.isfinite(values)
    if not finite.all():
        raise TensorError(
            f"input {INPUT_NAME!r}: FP32 values must be finite, "
            f"got {int(values.size - finite.sum())} NaN/inf"
        )
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise TensorError(
            f"input {INPUT_NAME!r}: FP32 pixels must be in 0..1, got values in {low:g}..{high:g} "
            "(send UINT8 for raw 0..255 pixels)"
        )
    return values
