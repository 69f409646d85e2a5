"""The APIs the service speaks, declared once: which paths belong to each, the shape of its
errors, its metrics label and OpenAPI tags, and which of its paths need no API key.

Errors (:mod:`service.errors`), metrics and the access line (:mod:`service.middleware`), the
key guard (:mod:`service.auth`), the OpenAPI document (:mod:`service.docs`) and the routers
all read this table; a new front door is one more row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Api:
    label: str  # in metrics (``protocol=``) and access lines
    # its paths: the prefix itself or below it; a prefix ending in "." takes every gRPC
    # package under it; "" = every other path
    prefix: str
    plain_errors: bool  # ``{"error": "<message>"}`` (and no 422) instead of our error shape
    probes: tuple[str, ...]  # prefixes of its health probes: open without an API key
    tags: tuple[tuple[str, str], ...]  # OpenAPI tags (name, description)

    def owns(self, path: str) -> bool:
        if self.prefix.endswith("."):
            return path.startswith(self.prefix)
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")

    @property
    def tag(self) -> str:
        """The tag its routes carry (its first)."""
        return self.tags[0][0]


PLAIN_ERRORS = 'errors are {"error": "..."}'
OIP = Api(
    "oip_v2",
    "/v2",
    plain_errors=True,
    probes=("/v2/health/",),
    tags=(
        (
            "Open Inference Protocol (v2)",
            f"KServe V2 / Triton HTTP API, with the binary tensor data extension; {PLAIN_ERRORS}",
        ),
    ),
)
TF_SERVING = Api(
    "tfserving_v1",
    "/v1",
    plain_errors=True,
    probes=(),
    tags=(("TensorFlow Serving REST API (v1)", f"TensorFlow Serving's REST API; {PLAIN_ERRORS}"),),
)
# gRPC, on its own port: a method's path is /<package>.<Service>/<Method>
OIP_GRPC = Api(
    "oip_v2_grpc",
    "/inference.GRPCInferenceService",
    plain_errors=True,
    probes=(
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
    ),
    tags=(),
)
TF_SERVING_GRPC = Api(
    "tfserving_grpc", "/tensorflow.serving.PredictionService", True, probes=(), tags=()
)
GRPC_PROBES = Api(  # health checks (Kubernetes' gRPC probe) and reflection (grpcurl)
    "grpc_health",
    "/grpc.",
    plain_errors=True,
    probes=("/grpc.health.v1.Health/", "/grpc.reflection."),
    tags=(),
)
NATIVE = Api(
    "native",
    "",
    plain_errors=False,
    probes=("/health/",),
    tags=(
        ("inference", "cnn-serve's own API: classify uploaded images"),
        ("models", "cnn-serve's own API: models, versions, feature maps"),
        ("health", "cnn-serve's own API: liveness and readiness"),
    ),
)
APIS = (OIP, TF_SERVING, OIP_GRPC, TF_SERVING_GRPC, GRPC_PROBES, NATIVE)  # the catch-all last


def api_of(path: str) -> Api:
    """The API a request path (or a route template) belongs to."""
    return next(api for api in APIS if api.owns(path))


def is_probe(path: str) -> bool:
    """A health probe: Kubernetes and load balancers must reach it without secrets."""
    return path.startswith(api_of(path).probes)


OPENAPI_TAGS = [{"name": name, "description": text} for api in APIS for name, text in api.tags]
