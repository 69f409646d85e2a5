"""The gRPC front door: KServe V2 / Triton's ``GRPCInferenceService`` and TensorFlow Serving's
``PredictionService`` on ``CNN_SERVE_GRPC_PORT``, beside the REST app, in the same process and
event loop: one registry, one batcher, one set of budgets.

- :mod:`service.rpc.gate`: the rules every call obeys (keys, request IDs, errors as status
  codes, metrics, the access line), as the REST request gate applies them to HTTP;
- :mod:`service.rpc.oip` and :mod:`service.rpc.tfserving`: the two protocols as thin codecs
  over :mod:`service.oip`, :mod:`service.tfserving` and :mod:`service.inference`;
- :mod:`service.rpc.server`: the server, its health service and reflection, started and
  stopped by the app's lifespan.

The messages and service definitions are the clients' own, imported from their packages:
Triton's ``grpc_service.proto`` as ``tritonclient.grpc`` ships it (a superset of KServe V2:
its extra RPCs answer UNIMPLEMENTED) and ``tensorflow-serving-api``'s. Generating our own
copy would put a second ``inference`` package into protobuf's default descriptor pool, which
refuses the client's when both load in one process (an in-process test, a KServe
transformer calling Triton); theirs also stay byte-for-byte what the clients send.
"""
