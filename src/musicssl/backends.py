"""What can run the networks (a module without heavy imports: the CLI builds its options from it)."""

#: ``torch`` (PyTorch) or ``onnx`` (onnxruntime, ``pip install 'musicssl[onnx]'``)
BACKENDS = ("torch", "onnx")
