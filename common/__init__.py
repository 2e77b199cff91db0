"""Torch-free pieces shared by the coordinator and the clients: the prompt spec, serde, transport, logs."""
