"""Every kind of head a Keras model can have, declared or read off its graph, answered as
what it is through every door: checked against the model's own ``model.predict``."""

from __future__ import annotations

import base64
import json

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

from service.schemas import PredictResponse
from tests.service.conftest import make_client, oip_fp32
from tests.service.handwriting import encode
from tests.service.rpc.conftest import grpc_serving
from training.import_command import main
from training.metadata import softmax

ATOL = 1e-4
SIZE = 12
# heads in this order: the first class head is the logits one (what :classify answers)
KINDS = {
    "age": "regression",
    "scores": "logits",
    "shape": "multiclass",
    "attrs": "multilabel",
    "odd": "binary",
}


def every_kind(seed: int = 7) -> keras.Model:
    """One head of each kind: a separate Softmax layer (read through the graph), sigmoids of
    one and four units, and two linear heads that only a declaration can name."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((SIZE, SIZE, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    x = keras.layers.Flatten(name="flat")(x)
    shape = keras.layers.Dense(3, name="shape_scores")(x)
    return keras.Model(
        image,
        {
            "age": keras.layers.Dense(1, name="age")(x),
            "scores": keras.layers.Dense(4, name="scores")(x),
            "shape": keras.layers.Softmax(name="shape")(shape),
            "attrs": keras.layers.Dense(4, activation="sigmoid", name="attrs")(x),
            "odd": keras.layers.Dense(1, activation="sigmoid", name="odd")(x),
        },
        name="kinds",
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    model = every_kind()
    source = root / "kinds.keras"
    model.save(source)
    years = root / "age.txt"
    years.write_text("years\n")
    attrs = root / "attrs.txt"
    attrs.write_text("round\nred\nlarge\nshiny\n")
    repo = root / "models"
    argv = [str(source), "--name", "kinds", "--model-dir", str(repo)]
    argv += ["--head", "age=regression", "--head", "scores=logits"]
    argv += ["--labels", f"age={years}", "--labels", f"attrs={attrs}"]
    assert main(argv, repo) == 0
    return repo, model


@pytest.fixture(scope="module")
def kinds(repo):
    with make_client(model_dir=repo[0]) as c:
        yield c


def _png(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels))


def _images(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE), np.uint8)


def _expected(model: keras.Model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    x = (pixels[..., None] / 255).astype(np.float32)
    return {name: np.asarray(value) for name, value in model.predict(x, verbose=0).items()}


def test_kinds_are_declared_or_read_off_the_graph(kinds):
    meta = kinds.get("/models/kinds").json()["metadata"]
    assert {o["name"]: o["kind"] for o in meta["outputs"]} == KINDS
    listed = {m["name"]: m for m in kinds.get("/models").json()["models"]}["kinds"]
    assert {h["name"]: (h["kind"], h["classes"]) for h in listed["outputs"]} == {
        "age": ("regression", 1),
        "scores": ("logits", 4),
        "shape": ("multiclass", 3),
        "attrs": ("multilabel", 4),
        "odd": ("binary", 2),
    }


def test_predict_answers_each_kind_as_what_it_is(kinds, repo):
    _, model = repo
    pixels = _images(3)
    files = [("file", (f"{i}.png", _png(p))) for i, p in enumerate(pixels)]
    r = kinds.post("/predict", data={"model": "kinds"}, files=files)
    assert r.status_code == 200, r.text
    PredictResponse.model_validate(r.json())
    want = _expected(model, pixels)
    for i, prediction in enumerate(r.json()["predictions"]):
        out = prediction["outputs"]
        assert out["age"] == {
            "kind": "regression",
            "values": pytest.approx({"years": float(want["age"][i, 0])}, abs=ATOL),
        }
        logits = out["scores"]
        np.testing.assert_allclose(list(logits["logits"].values()), want["scores"][i], atol=ATOL)
        probabilities = softmax(want["scores"][i : i + 1])[0]
        np.testing.assert_allclose(list(logits["probabilities"].values()), probabilities, atol=ATOL)
        assert logits["index"] == int(np.argmax(want["scores"][i]))
        assert logits["confidence"] == pytest.approx(probabilities.max(), abs=ATOL)
        np.testing.assert_allclose(
            list(out["shape"]["probabilities"].values()), want["shape"][i], atol=ATOL
        )
        attrs = out["attrs"]
        assert list(attrs["probabilities"]) == ["round", "red", "large", "shiny"]
        np.testing.assert_allclose(
            list(attrs["probabilities"].values()), want["attrs"][i], atol=ATOL
        )
        assert attrs["labels"] == [
            label for label, p in zip(attrs["probabilities"], want["attrs"][i]) if p >= 0.5
        ]
        assert out["odd"]["probability"] == pytest.approx(float(want["odd"][i, 0]), abs=ATOL)


def test_a_multilabel_threshold_chooses_the_labels(kinds, repo):
    _, model = repo
    pixels = _images(1, seed=5)
    p = _expected(model, pixels)["attrs"][0]
    threshold = float(np.sort(p)[1])  # between: the three largest apply
    r = kinds.post(
        "/predict",
        data={"model": "kinds", "threshold": str(threshold)},
        files={"file": ("x.png", _png(pixels[0]))},
    )
    attrs = r.json()["predictions"][0]["outputs"]["attrs"]
    assert attrs["threshold"] == threshold and len(attrs["labels"]) == 3
    assert (
        kinds.post(
            "/predict",
            data={"model": "kinds", "threshold": "1.5"},
            files={"file": ("x.png", _png(pixels[0]))},
        ).status_code
        == 422
    )


def test_oip_passes_tensors_and_classifies_class_heads_only(kinds, repo):
    _, model = repo
    pixels = _images(2, seed=8)
    x = (pixels[..., None] / 255).astype(np.float32)
    want = _expected(model, pixels)
    r = kinds.post("/v2/models/kinds/infer", json=oip_fp32(x))
    assert r.status_code == 200, r.text
    for output in r.json()["outputs"]:
        np.testing.assert_allclose(
            np.reshape(output["data"], output["shape"]), want[output["name"]], atol=ATOL
        )
    asked = {**oip_fp32(x), "outputs": [{"name": "attrs", "parameters": {"classification": 4}}]}
    r = kinds.post("/v2/models/kinds/infer", json=asked)
    assert r.status_code == 200, r.text
    rows = np.reshape(r.json()["outputs"][0]["data"], (2, 4))
    for row, p in zip(rows, want["attrs"]):  # every label scored, most probable first
        scores = {int(item.split(":")[1]): float(item.split(":")[0]) for item in row}
        assert sorted(scores) == [0, 1, 2, 3]
        np.testing.assert_allclose([scores[i] for i in range(4)], p, atol=ATOL)
    asked["outputs"] = [{"name": "age", "parameters": {"classification": 1}}]
    r = kinds.post("/v2/models/kinds/infer", json=asked)
    assert r.status_code == 400 and "age" in r.json()["error"]


def _examples(pixels: np.ndarray) -> dict:
    return {"examples": [{"image": {"b64": base64.b64encode(_png(p)).decode()}} for p in pixels]}


def test_tf_serving_classify_gives_the_softmax_of_logits_and_regress_the_value(kinds, repo):
    _, model = repo
    pixels = _images(2, seed=9)
    want = _expected(model, pixels)
    r = kinds.post("/v1/models/kinds:classify", content=json.dumps(_examples(pixels)))
    assert r.status_code == 200, r.text
    for pairs, scores in zip(r.json()["results"], want["scores"]):
        assert [label for label, _ in pairs] == ["0", "1", "2", "3"]
        np.testing.assert_allclose([s for _, s in pairs], softmax(scores[None])[0], atol=ATOL)
    r = kinds.post("/v1/models/kinds/versions/1:regress", content=json.dumps(_examples(pixels)))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["results"], want["age"][:, 0], atol=ATOL)


def test_regress_refuses_a_model_without_a_regression_head(client):
    r = client.post("/v1/models/digit_odd:regress", content=json.dumps(_examples(_images(1))))
    assert r.status_code == 400
    assert r.json()["error"].startswith("regress serves a regression head; model 'digit_odd'")


def test_grpc_regress_serves_the_regression_head(repo):
    root, model = repo
    pixels = _images(2, seed=10)
    want = _expected(model, pixels)
    with grpc_serving(root) as served, grpc.insecure_channel(served.grpc) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "kinds"
        for p in pixels:
            example = request.input.example_list.examples.add()
            example.features.feature["image"].bytes_list.value.append(_png(p))
        response = stub.Regress(request, timeout=30)
        np.testing.assert_allclose(
            [r.value for r in response.result.regressions], want["age"][:, 0], atol=ATOL
        )
        assert response.model_spec.version.value == 1


def _grad_cam(model: keras.Model, image: np.ndarray, layer: str, head: str, index: int):
    """Grad-CAM as keras.io writes it, on the model itself: the reference."""
    graph = keras.Model(model.inputs, [model.get_layer(layer).output, model.output[head]])
    x = tf.constant(image[None])
    with tf.GradientTape() as tape:
        activation, scores = graph(x, training=False)
        score = scores[0, index]
    grads = tape.gradient(score, activation)
    weights = tf.reduce_mean(grads[0], axis=(0, 1))
    heat = tf.nn.relu(tf.reduce_sum(activation[0] * weights, axis=-1))
    heat = tf.math.divide_no_nan(heat, tf.reduce_max(heat))
    return tf.image.resize(heat[..., None], (SIZE, SIZE), method="bilinear")[..., 0].numpy()


@pytest.mark.parametrize(
    ("head", "index"),
    [
        ("age", None),
        ("scores", None),
        ("scores", 2),
        ("attrs", None),
        ("attrs", 3),
        ("shape", None),
    ],
)
def test_grad_cam_explains_every_kind(kinds, repo, head, index):
    """The class logit, a regression value, one label of a multilabel head."""
    _, model = repo
    pixels = _images(1, seed=11)
    image = (pixels[0][..., None] / 255).astype(np.float32)
    want = _expected(model, pixels)[head][0]
    data = {"output": head} | ({} if index is None else {"class_index": str(index)})
    r = kinds.post("/models/kinds/explain", data=data, files={"file": ("x.png", _png(pixels[0]))})
    assert r.status_code == 200, r.text
    chosen = r.json()["class_index"]
    default = 0 if head == "age" else int(np.argmax(want))
    assert chosen == (default if index is None else index)
    np.testing.assert_allclose(
        r.json()["heatmap"], _grad_cam(model, image, "conv", head, chosen), atol=1e-3
    )


def test_a_linear_head_without_a_declaration_is_refused(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="relu")]
    )
    source = tmp_path / "relu.keras"
    model.save(source)
    repo = tmp_path / "models"
    with pytest.raises(SystemExit) as info:
        main([str(source), "--name", "relu", "--model-dir", str(repo)], repo)
    message = str(info.value.code)
    assert "ends in relu" in message and "--head dense=logits|regression" in message.replace(
        model.layers[-1].name, "dense"
    )
    assert not (repo / "relu").exists()
    with pytest.raises(SystemExit) as info:
        main([str(source), "--name", "relu", "--model-dir", str(repo), "--head", "binary"], repo)
    assert "3 units; a binary head has one" in str(info.value.code)
    assert (
        main(
            [str(source), "--name", "relu", "--model-dir", str(repo), "--head", "regression"], repo
        )
        == 0
    )
