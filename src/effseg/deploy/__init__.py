"""Deployment: load any model artifact, ONNX files and their metadata, export, onnxruntime, int8.

- :mod:`effseg.deploy.artifact`: ``load_artifact(spec)`` -- the one loader for shipped model
  names, run folders, ``.pt`` checkpoints and ``.onnx`` files (used by ``effseg.load``, ``eval``,
  ``bench``, ``export`` and ``predict``).
- :mod:`effseg.deploy.onnx_io`: effseg metadata in ONNX files, onnxruntime sessions, logit parity.
- :mod:`effseg.deploy.export`: ONNX / TorchScript export with BatchNorm folding and checks.
- :mod:`effseg.deploy.runtime`: ``OnnxSegmentor``, an ONNX file that behaves like a Segmentor
  (run by onnxruntime or OpenVINO).
- :mod:`effseg.deploy.openvino_io`: ``OpenVinoSession``, an ONNX file compiled by OpenVINO with
  the onnxruntime-session calls effseg uses (the ``openvino`` runtimes); needs openvino.
- :mod:`effseg.deploy.quantize`: static int8 QDQ quantization calibrated on real images.
- :mod:`effseg.deploy.pt2e`: PyTorch's own int8 (PT2E for x86, compiled by inductor), the
  ``compile-int8`` runtime; needs torchao.

Imports flow one way: artifact -> runtime -> onnx_io -> openvino_io; export -> onnx_io; quantize -> onnx_io;
pt2e imports nothing of effseg but its errors.
Nothing here imports ``effseg.api``, ``effseg.bench``, ``effseg.pipeline``, ``effseg.app`` or ``effseg.cli``.
"""
