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


def spec_from_metadata(
    meta: pb.ModelMetadataResponse,
    version: str = "",
    *,
    input_name: str = "",
    output_name: str = "",
    datatype: str = "",
) -> TensorSpec:
    """Pick the image input and an output from a model's metadata.

    By default the first MNIST-shaped input (FP32 or UINT8, [-1,784] or [-1,28,28]) and
    the first output; `input_name`, `output_name` and `datatype` choose otherwise.
    Raises ValueError naming what the model offers when nothing fits.
    """
    if datatype and datatype not in SUPPORTED_DATATYPES:
        raise ValueError(
            f"datatype must be one of {', '.join(SUPPORTED_DATATYPES)}, got {datatype!r}"
        )
    if not meta.inputs or not meta.outputs:
        raise ValueError(f"model {meta.name!r} lists no inputs or no outputs in its metadata")
    outputs = [o.name for o in meta.outputs]
    if output_name and output_name not in outputs:
        raise ValueError(f"model {meta.name!r} has no output {output_name!r}; it has {outputs}")
    offered = []
    for tensor in meta.inputs:
        dims = tuple(tensor.shape)
        offered.append(f"{tensor.name} {tensor.datatype} {list(dims)}")
        image = dims[1:] if len(dims) > 1 and dims[0] in (-1,) else dims
        if input_name and tensor.name != input_name:
            continue
        if tensor.datatype in SUPPORTED_DATATYPES and image in ((PIXELS,), (28, 28)):
            return TensorSpec(
                model_name=meta.name,
                model_version=version,
                input_name=tensor.name,
                input_datatype=datatype or tensor.datatype,
                image_shape=image,
                output_name=output_name or outputs[0],
            )
    wanted = f"input {input_name!r}" if input_name else "MNIST-shaped input"
    raise ValueError(
        f"model {meta.name!r} has no {wanted} (FP32 or UINT8, [-1,784] or [-1,28,28]); "
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
    order: str = "cycle",
    contents: str = "raw",
) -> list[Payload]:
    """`count` requests of `batch_size` real digits each, the load loop cycles through them.

    `order` "cycle" takes the digits in an order shuffled by `seed` (the shipped sample is
    sorted by label, so never in file order); "sample" draws them at random with
    replacement. `contents` "raw" sends little-endian bytes in `raw_input_contents`,
    "typed" sends `fp32_contents` / `uint_contents`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if order not in ("cycle", "sample"):
        raise ValueError(f"order must be cycle or sample, got {order!r}")
    if contents not in ("raw", "typed"):
        raise ValueError(f"contents must be raw or typed, got {contents!r}")
    n = len(digits)
    total = batch_size * count
    rng = np.random.default_rng(seed)
    if order == "sample":
        index = rng.integers(0, n, size=total)
    else:
        index = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
    payloads = []
    for k in range(count):
        rows = index[k * batch_size : (k + 1) * batch_size]
        images = digits.images[rows]
        request = pb.ModelInferRequest(model_name=spec.model_name, model_version=spec.model_version)
        tensor = request.inputs.add()
        tensor.name = spec.input_name
        tensor.datatype = spec.input_datatype
        tensor.shape.extend([batch_size, *spec.image_shape])
        if spec.input_datatype == "FP32":
            data = (images.astype(np.float32) / 255.0).astype("<f4")
            if contents == "typed":
                tensor.contents.fp32_contents.extend(data.ravel().tolist())
        else:
            data = images.astype(np.uint8)
            if contents == "typed":
                tensor.contents.uint_contents.extend(data.ravel().tolist())
        if contents == "raw":
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
