"""Inference requests built from real MNIST digits, serialized once and reused.

The agent sends pre-serialized `ModelInferRequest` bytes through a channel that does no
serialization of its own, so the hot path allocates nothing per request but the call.
Each payload remembers the labels of its digits, so a response can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_server.api import grpc_predict_v2_pb2 as pb
from model_server.data import PIXELS, Digits


@dataclass(frozen=True)
class TensorSpec:
    """The target model's input and output, as its ModelMetadata describes them."""

    model_name: str
    model_version: str = ""
    input_name: str = "input"
    input_datatype: str = "FP32"  # FP32 (pixels / 255) or UINT8 (raw pixels)
    image_shape: tuple[int, ...] = (PIXELS,)  # (784,) or (28, 28)
    output_name: str = "probabilities"


SUPPORTED_DATATYPES = ("FP32", "UINT8")


def spec_from_metadata(meta: pb.ModelMetadataResponse, version: str = "") -> TensorSpec:
    """Pick the image input and the first output from a model's metadata.

    Raises ValueError naming what the model offers when it takes no MNIST-shaped input.
    """
    if not meta.inputs or not meta.outputs:
        raise ValueError(f"model {meta.name!r} lists no inputs or no outputs in its metadata")
    offered = []
    for tensor in meta.inputs:
        dims = tuple(tensor.shape)
        offered.append(f"{tensor.name} {tensor.datatype} {list(dims)}")
        image = dims[1:] if len(dims) > 1 and dims[0] in (-1,) else dims
        if tensor.datatype in SUPPORTED_DATATYPES and image in ((PIXELS,), (28, 28)):
            return TensorSpec(
                model_name=meta.name,
                model_version=version,
                input_name=tensor.name,
                input_datatype=tensor.datatype,
                image_shape=image,
                output_name=meta.outputs[0].name,
            )
    raise ValueError(
        f"model {meta.name!r} has no MNIST-shaped input (FP32 or UINT8, [-1,784] or [-1,28,28]); "
        f"it offers: {', '.join(offered)}"
    )


@dataclass(frozen=True)
class Payload:
    request: bytes  # a serialized ModelInferRequest
    labels: np.ndarray  # uint8 [batch]


def build_payloads(
    digits: Digits,
    spec: TensorSpec,
    *,
    batch_size: int = 1,
    count: int = 512,
    seed: int = 0,
) -> list[Payload]:
    """`count` requests of `batch_size` digits each, the digits in an order shuffled by `seed`.

    The shipped sample is sorted by label, so digits are never taken in file order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    n = len(digits)
    total = batch_size * count
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
    payloads = []
    for k in range(count):
        rows = index[k * batch_size : (k + 1) * batch_size]
        images = digits.images[rows]
        if spec.input_datatype == "FP32":
            data = (images.astype(np.float32) / 255.0).astype("<f4")
        else:
            data = images.astype(np.uint8)
        request = pb.ModelInferRequest(model_name=spec.model_name, model_version=spec.model_version)
        tensor = request.inputs.add()
        tensor.name = spec.input_name
        tensor.datatype = spec.input_datatype
        tensor.shape.extend([batch_size, *spec.image_shape])
        request.raw_input_contents.append(data.tobytes())
        request.outputs.add().name = spec.output_name
        payloads.append(Payload(request=request.SerializeToString(), labels=digits.labels[rows]))
    return payloads


def predicted_classes(response: bytes, spec: TensorSpec) -> np.ndarray:
    """The argmax class per digit of a serialized ModelInferResponse (typed or raw output)."""
    msg = pb.ModelInferResponse.FromString(response)
    for i, out in enumerate(msg.outputs):
        if out.name != spec.output_name:
            continue
        if i < len(msg.raw_output_contents):
            probs = np.frombuffer(msg.raw_output_contents[i], dtype="<f4")
        else:
            probs = np.asarray(out.contents.fp32_contents, dtype=np.float32)
        shape = tuple(out.shape)
        return probs.reshape(shape[0], -1).argmax(axis=1)
    raise ValueError(f"response has no output named {spec.output_name!r}")
