"""Inference: onnxruntime sessions, routing and traffic policies (domain code, no gRPC)."""
