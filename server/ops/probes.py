"""A plaintext port that serves nothing but `grpc.health.v1`, for the kubelet's probes.

The federation port requires client certificates when mTLS is on, and the kubelet's gRPC probe can present
none (it dials plaintext; its TLS mode sends no client certificate): a probe there can never pass (REFERENCE
§7). This second server shares the coordinator's health servicer, so it reports exactly what the main port
would (SERVING, then NOT_SERVING at shutdown), and carries no other service: no prompts, no status, no joins.
The Service does not expose it; only the kubelet (the pod IP) needs it. See docs/deploy.md.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc


def serve_health(bind: str, port: int, servicer: health.HealthServicer) -> tuple[grpc.Server, int]:
    """Start the health-only plaintext server; returns it and its port (a free one for port 0)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
                         options=[("grpc.so_reuseport", 0)], maximum_concurrent_rpcs=8)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for health probes on {address}: {exc} (is another process using it?)") from None
    if bound == 0:
        raise OSError(f"cannot listen for health probes on {address} (is another process using it?)")
    server.start()
    return server, bound
