"""The model registry: metadata store, artifact store, ONNX checks, sklearn -> ONNX export."""
