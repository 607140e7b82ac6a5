"""Bandits: policies, decisions and rewards (domain code, no gRPC)."""
