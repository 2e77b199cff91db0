"""The torch-free pfeddc coordinator: round state, FedAvg, checkpoints and the gRPC service."""
