"""The same requests to Triton Inference Server and to cnn-serve, over REST (tritonclient and
raw HTTP) and gRPC: status codes, gRPC codes, the fields and types of every answer, and the
statistics' counts. Where cnn-serve differs on purpose, the difference is named in
``DIFFERENCES`` and checked as such, so it cannot grow unnoticed."""

from __future__ import annotations

import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conformance.conftest import MODEL

# what cnn-serve answers differently on purpose (checked below, each where it applies)
DIFFERENCES = {
    "platform": "the model's platform: tensorflow_savedmodel, not Triton's backend name",
    "image_bytes": "an extra BYTES input of image files, preprocessed as /predict does",
    "labels": "classification entries carry the label (score:index:label): every head has "
    "labels, Triton's only with a label file",
    "messages": "error messages are cnn-serve's own words (the codes are Triton's)",
    "extensions": "server metadata lists only the extensions cnn-serve implements",
    "never 500": "a request whose JSON data does not fit its datatype or shape is a 400; "
    "Triton answers 500 (a client's mistake is never a server error here)",
    "not found": "an unknown model or version is 404 on every REST endpoint (NOT_FOUND over "
    "gRPC); Triton says 404 on metadata, config and infer but 400 on ready and statistics "
    "(INVALID_ARGUMENT)",
    "config": "the model configuration has the fields that describe the model, not Triton's "
    "scheduling and backend fields (instance_group, dynamic_batching, optimization...)",
}


def shape_of(value):
    """A JSON value's structure: keys and types, not values (ints and floats are numbers)."""
    if isinstance(value, dict):
        return {key: shape_of(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else type(value).__name__


def _get(server, path: str) -> httpx.Response:
    return httpx.get(f"http://{server.http}{path}", timeout=30)


def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"http://{server.http}{path}", json=body, timeout=30)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1), np.float32)


def _infer_body(x: np.ndarray, **extra) -> dict:
    return {
        "inputs": [
            {
                "name": "image",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ],
        **extra,
    }


def test_server_metadata(both):
    triton, ours = (_get(s, "/v2").json() for s in both.values())
    assert shape_of(ours) == shape_of(triton)
    # DIFFERENCES["extensions"]: what we list, Triton lists too
    assert set(ours["extensions"]) <= set(triton["extensions"])
    assert {"binary_tensor_data", "classification", "model_configuration"} <= set(
        ours["extensions"]
    )
    assert {"model_repository", "statistics"} <= set(ours["extensions"])
    for server in both.values():
        client = grpcclient.InferenceServerClient(server.grpc)
        assert client.get_server_metadata().extensions  # the same message over gRPC


def test_model_metadata(both):
    triton, ours = (_get(s, f"/v2/models/{MODEL}").json() for s in both.values())
    assert set(ours) == set(triton) and ours["name"] == triton["name"] == MODEL
    assert ours["outputs"] == triton["outputs"]
    assert ours["platform"] != triton["platform"]  # DIFFERENCES["platform"]
    assert ours["inputs"][0] == triton["inputs"][0]
    assert [i["name"] for i in ours["inputs"][1:]] == ["image_bytes"]  # DIFFERENCES
    assert shape_of(ours["versions"]) == shape_of(triton["versions"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_config(both, protocol):
    configs = {}
    for name, server in both.items():
        if protocol == "http":
            config = httpclient.InferenceServerClient(server.http).get_model_config(MODEL)
        else:
            client = grpcclient.InferenceServerClient(server.grpc)
            config = client.get_model_config(MODEL, as_json=True)["config"]
        configs[name] = config
    triton, ours = configs["triton"], configs["cnn-serve"]
    assert set(ours) <= set(triton) | {"platform"}  # DIFFERENCES["config"]
    assert ours["max_batch_size"] == triton["max_batch_size"]
    assert ours["output"] == [
        {k: v for k, v in o.items() if k in ("name", "data_type", "dims")} for o in triton["output"]
    ]
    first = {k: v for k, v in triton["input"][0].items() if k in ("name", "data_type", "dims")}
    assert ours["input"][0] == first


@pytest.mark.parametrize(
    ("name", "version"), [(MODEL, ""), (MODEL, "1"), ("no_such_model", ""), (MODEL, "7")]
)
def test_readiness(both, name, version):
    """``is_model_ready`` answers a boolean for any name, over both protocols."""
    answers = {}
    for label, server in both.items():
        http = httpclient.InferenceServerClient(server.http)
        rpc = grpcclient.InferenceServerClient(server.grpc)
        answers[label] = (
            http.is_server_live(),
            http.is_server_ready(),
            http.is_model_ready(name, version),
            rpc.is_server_live(),
            rpc.is_model_ready(name, version),
            _get(
                server, f"/v2/models/{name}{f'/versions/{version}' if version else ''}/ready"
            ).status_code,
        )
    if name != MODEL or version == "7":  # DIFFERENCES["not found"]
        assert (answers["triton"][-1], answers["cnn-serve"][-1]) == (400, 404)
        answers = {k: v[:-1] for k, v in answers.items()}
    assert answers["cnn-serve"] == answers["triton"]


def _check_infer_answers(triton: dict, ours: dict) -> None:
    assert shape_of(ours) == shape_of(triton)
    for mine, theirs in zip(ours["outputs"], triton["outputs"], strict=True):
        assert (mine["name"], mine["datatype"], mine["shape"]) == (
            theirs["name"],
            theirs["datatype"],
            theirs["shape"],
        )


def test_infer_json(both):
    x = _pixels(3)
    triton, ours = (
        _post(s, f"/v2/models/{MODEL}/infer", _infer_body(x, id="a1")).json() for s in both.values()
    )
    _check_infer_answers(triton, ours)
    assert ours["id"] == triton["id"] == "a1"


def test_infer_binary_outputs(both):
    x = _pixels(2)
    answers = {}
    for name, server in both.items():
        client = httpclient.InferenceServerClient(server.http)
        tensor = httpclient.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        outputs = [
            httpclient.InferRequestedOutput("digit", binary_data=True),
            httpclient.InferRequestedOutput("odd", binary_data=False),
        ]
        result = client.infer(MODEL, [tensor], outputs=outputs)
        answers[name] = (
            result.as_numpy("digit").shape,
            result.as_numpy("odd").shape,
            shape_of(result.get_response()),
        )
    assert answers["cnn-serve"] == answers["triton"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classification(both, protocol):
    x = _pixels(2)
    rows = {}
    for name, server in both.items():
        lib = httpclient if protocol == "http" else grpcclient
        address = server.http if protocol == "http" else server.grpc
        tensor = lib.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        asked = lib.InferRequestedOutput("digit", class_count=3)
        result = lib.InferenceServerClient(address).infer(MODEL, [tensor], outputs=[asked])
        rows[name] = result.as_numpy("digit")
    triton, ours = rows["triton"], rows["cnn-serve"]
    assert ours.shape == triton.shape == (2, 3) and ours.dtype == triton.dtype
    for mine, theirs in zip(ours.ravel(), triton.ravel()):
        score, index, *label = mine.decode().split(":")
        assert len(theirs.decode().split(":")) == 2 and label  # DIFFERENCES["labels"]
        float(score), int(index)


ERROR_CASES = {
    "unknown model": ("no_such_model", "", {}),
    "unknown version": (MODEL, "7", {}),
    "unknown input": (MODEL, "", {"name": "pixels"}),
    "wrong datatype": (MODEL, "", {"datatype": "INT32"}),
    "wrong shape": (MODEL, "", {"shape": [2, 28, 28]}),
    "too few values": (MODEL, "", {"data": [0.5] * 10}),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_over_rest(both, case):
    model, version, change = ERROR_CASES[case]
    x = _pixels(2)
    body = _infer_body(x)
    body["inputs"][0].update(change)
    path = f"/v2/models/{model}{f'/versions/{version}' if version else ''}/infer"
    answers = {name: _post(server, path, body) for name, server in both.items()}
    triton, ours = answers["triton"], answers["cnn-serve"]
    if triton.status_code == 500:  # DIFFERENCES["never 500"]
        assert case in ("wrong datatype", "too few values") and ours.status_code == 400
    else:
        assert ours.status_code == triton.status_code, (triton.text, ours.text)
    assert set(ours.json()) == set(triton.json()) == {"error"}  # DIFFERENCES["messages"]


def _grpc_request(model: str, version: str, change: dict) -> pb.ModelInferRequest:
    x = _pixels(2)
    tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape)}
    tensor.update({k: v for k, v in change.items() if k != "data"})
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(**{k: tensor[k] for k in ("name", "datatype", "shape")})
    values = np.asarray(change.get("data", x.ravel()), np.float32)
    request.raw_input_contents.append(
        values.astype(np.int32).tobytes() if tensor["datatype"] == "INT32" else values.tobytes()
    )
    return request


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_over_grpc(both, case):
    codes = {}
    for name, server in both.items():
        with grpc.insecure_channel(server.grpc) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(_grpc_request(*ERROR_CASES[case]), timeout=30)
            codes[name] = info.value.code()
    assert codes["cnn-serve"] == codes["triton"]


def _statistics(server, protocol: str) -> dict:
    if protocol == "http":
        stats = httpclient.InferenceServerClient(server.http).get_inference_statistics(MODEL)
    else:
        client = grpcclient.InferenceServerClient(server.grpc)
        stats = client.get_inference_statistics(MODEL, as_json=True)
    return stats["model_stats"][0]


def _counts(stats: dict) -> tuple[int, int, int]:
    inference = stats["inference_stats"]
    return (
        int(stats["inference_count"]),
        int(inference["success"]["count"]),
        int(inference["queue"]["count"]),
    )


def _settled(server, protocol: str, want: tuple[int, int, int]) -> dict:
    """The statistics once they show ``want`` (Triton's Python backend reports them after
    the response goes out), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        stats = _statistics(server, protocol)
        if _counts(stats) == want or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_statistics_count_the_same_requests_the_same_way(both, protocol):
    sizes = [1, 3, 2]  # three requests, six images, one after another
    deltas = {}
    for name, server in both.items():
        before = _statistics(server, protocol)
        client = httpclient.InferenceServerClient(server.http)
        for i, n in enumerate(sizes):
            tensor = httpclient.InferInput("image", [n, 28, 28, 1], "FP32")
            tensor.set_data_from_numpy(_pixels(n, i))
            client.infer(MODEL, [tensor])
        start = _counts(before)
        want = (start[0] + sum(sizes), start[1] + len(sizes), start[2] + len(sizes))
        after = _settled(server, protocol, want)
        if protocol == "http":  # the same fields, of the same types (gRPC: strings for uint64)
            assert shape_of(after) == shape_of(_statistics(both["triton"], "http"))
        deltas[name] = tuple(a - b for a, b in zip(_counts(after), start))
        executions = int(after["execution_count"]) - int(before["execution_count"])
        assert executions == len(sizes)  # one model call per request sent alone
        assert int(after["last_inference"]) >= int(before["last_inference"])
        batches = {int(b["batch_size"]) for b in after["batch_stats"]}
        assert set(sizes) <= batches
    assert deltas["cnn-serve"] == deltas["triton"] == (sum(sizes), len(sizes), len(sizes))


def test_statistics_of_unknown_models_and_every_model(both):
    for path in ("/v2/models/no_such_model/stats", f"/v2/models/{MODEL}/versions/7/stats"):
        triton, ours = (_get(s, path) for s in both.values())
        assert (triton.status_code, ours.status_code) == (400, 404)  # DIFFERENCES["not found"]
        assert set(ours.json()) == set(triton.json()) == {"error"}
    triton, ours = (_get(s, "/v2/models/stats").json()["model_stats"] for s in both.values())
    assert {f"{m['name']}/{m['version']}" for m in ours} == {  # every served version
        f"{name}/{version}"
        for name, versions in _served(both["cnn-serve"]).items()
        for version in versions
    }
    (mine,) = [m for m in ours if m["name"] == MODEL]
    assert shape_of(mine) == shape_of(triton[0])
    codes = {}
    for name, server in both.items():
        client = grpcclient.InferenceServerClient(server.grpc)
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics("no_such_model")
        codes[name] = info.value.status()
    assert codes == {  # DIFFERENCES["not found"]
        "triton": "StatusCode.INVALID_ARGUMENT",
        "cnn-serve": "StatusCode.NOT_FOUND",
    }


def _served(server) -> dict[str, list[str]]:
    index = httpx.post(f"http://{server.http}/v2/repository/index", json={}, timeout=30).json()
    served: dict[str, list[str]] = {}
    for entry in index:
        if entry.get("state") == "READY":
            served.setdefault(entry["name"], []).append(entry["version"])
    return served


def test_grpc_model_config_and_metadata_messages(both):
    """The raw messages, field for field (values aside)."""
    fields = {}
    for name, server in both.items():
        with grpc.insecure_channel(server.grpc) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30)
            fields[name] = shape_of(json_format.MessageToDict(metadata))
    assert fields["cnn-serve"] == fields["triton"]
