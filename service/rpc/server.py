"""The gRPC server: grpcio's asyncio server on the app's event loop, started by the lifespan
once the models are loaded and stopped before they are unloaded.

Beside the two inference services it serves ``grpc.health.v1.Health`` (Kubernetes' gRPC
probe, ``grpc_health_probe``: SERVING while the default model serves and the process is not
draining, else NOT_SERVING, for the server and for each service by name) and reflection, so
``grpcurl`` needs no proto files.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import prediction_service_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.auth import Access
from service.drain import Drain
from service.rpc.gate import RpcGate
from service.rpc.oip import InferenceService
from service.rpc.tfserving import PredictionService
from service.server import Server

log = logging.getLogger("cnn_serve")

SERVICES = (
    service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
)
HEALTH_EVERY_S = 0.25  # how soon a probe sees a change of readiness or the start of a drain
MAX_WATCHES = 4  # health Watch streams at once (probes use Check)
# calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): a client's
# further calls wait on its own connection, so calls that never send their message tie up
# that client alone. Well above what one client keeps in flight: at the limit, a call opened
# just as another ends is refused (RST_STREAM REFUSED_STREAM: at 16, 16 in flight lost 30 %
# of calls as UNAVAILABLE); calls in progress are bounded by CNN_SERVE_GRPC_MAX_CONCURRENT_RPCS
STREAMS_PER_CONNECTION = 128
# every connection is closed after this long (clients reconnect, as after any GOAWAY), and a
# call still open then gets the grace: a call cannot hold one of the few call slots forever
MAX_CONNECTION_AGE_MS, MAX_CONNECTION_AGE_GRACE_MS = 10 * 60_000, 30_000


class BoundedHealth(health.aio.HealthServicer):
    """The health service with at most :data:`MAX_WATCHES` Watch streams: each is a task
    and a stream for as long as it lasts."""

    def __init__(self) -> None:
        super().__init__()
        self.watching = 0

    async def Watch(self, request, context) -> None:
        if self.watching >= MAX_WATCHES:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {MAX_WATCHES} health watches at once; probes can use Check",
            )
        self.watching += 1
        try:
            await super().Watch(request, context)
        finally:
            self.watching -= 1


class GrpcFrontDoor:
    """A started gRPC server and the task that keeps its health status current."""

    def __init__(self, rpc: grpc.aio.Server, watcher: asyncio.Task, port: int) -> None:
        self.rpc, self.watcher, self.port = rpc, watcher, port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let those in progress finish for ``grace_s``, then cancel them."""
        self.watcher.cancel()
        await self.rpc.stop(grace_s)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(server: Server, drain: Drain) -> GrpcFrontDoor | None:
    """Serve gRPC on ``CNN_SERVE_GRPC_PORT`` (None when it is 0)."""
    settings = server.settings
    if not settings.grpc_port:
        return None
    size = settings.grpc_max_message_bytes
    rpc = grpc.aio.server(
        interceptors=[
            RpcGate(
                Access.from_settings(settings),
                settings.grpc_max_concurrent_rpcs,
                server.trimmer.soon,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            # batches of images, not chat: +10 % images/s on 64-image calls (bench.protocols)
            ("grpc.optimization_target", "throughput"),
            # several workers share the port; one alone must learn that it is taken
            ("grpc.so_reuseport", int(settings.workers > 1)),
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(server, drain), rpc
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(server), rpc
    )
    checks = BoundedHealth()
    health_pb2_grpc.add_HealthServicer_to_server(checks, rpc)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), rpc
    )
    address = _address(settings.host, settings.grpc_port)
    try:
        port = rpc.add_insecure_port(address)
    except RuntimeError:
        raise RuntimeError(
            f"cannot listen for gRPC on {address} (is the port taken?); set "
            "CNN_SERVE_GRPC_PORT to a free port, or to 0 to turn gRPC off"
        ) from None
    await rpc.start()
    watcher = asyncio.get_running_loop().create_task(
        _keep_health(checks, server, drain), name="grpc-health"
    )
    log.info("gRPC on %s (KServe V2 / Triton, TF Serving, health, reflection)", address)
    return GrpcFrontDoor(rpc, watcher, port)


async def _keep_health(checks: BoundedHealth, server: Server, drain: Drain) -> None:
    status = None
    while True:
        serving = server.registry.ready and not drain.active
        now = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if now != status:
            status = now
            for name in ("", *SERVICES):
                await checks.set(name, status)
        await asyncio.sleep(HEALTH_EVERY_S)
