"""Generated gRPC stubs of protos/pfeddc/v1 (python protos/generate.py)."""
