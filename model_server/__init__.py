"""raysiege's gRPC inference server for MNIST (Open Inference Protocol / KServe V2).

Importing this package is cheap: it never imports TensorFlow (only `model_server.model`
does) or gRPC. `model_server.api` holds the generated protocol modules and
`model_server.data` the shipped digits; both are safe for agents to import.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("raysiege")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
