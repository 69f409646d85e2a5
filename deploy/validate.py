"""Validate every manifest in deploy/kubernetes against the Kubernetes schemas (strict).

kubernetes-validate has no schemas for KServe's resources or Kubeflow's TFJob, so they are
checked in two parts:
what is a PodSpec (a ServingRuntime's containers, security context, ...; an InferenceService
predictor's own containers) is validated as the PodSpec of a Pod, and KServe's own fields are
checked against the field lists of its v1alpha1/v1beta1 API: known names only, a protocol that
KServe knows, and an InferenceService's model that names a runtime defined here which
supports its model format and protocol.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import yaml

K8S_VERSION = "1.30.0"
PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                           "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
                           "batcher", "labels", "annotations", "deploymentStrategy"}
MODEL_FIELDS = {"modelFormat", "runtime", "protocolVersion", "storageUri", "args", "env",
                "resources", "ports", "volumeMounts", "image"}
RUNTIME_FIELDS = {"supportedModelFormats", "protocolVersions", "multiModel", "disabled",
                  "grpcEndpoint", "grpcDataEndpoint", "httpDataEndpoint", "replicas",
                  "storageHelper", "builtInAdapter", "annotations", "labels"}


class Invalid(Exception):
    pass


def _pod(spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}


def _serving_runtime(doc: dict) -> list[dict]:
    spec = doc["spec"]
    unknown = set(spec["protocolVersions"]) - PROTOCOLS
    if unknown or not spec["supportedModelFormats"]:
        raise Invalid(f"protocols {sorted(unknown)} unknown, or no supportedModelFormats")
    return [_pod({k: v for k, v in spec.items() if k not in RUNTIME_FIELDS})]


def _inference_service(doc: dict, runtimes: dict[str, dict]) -> list[dict]:
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1", doc["apiVersion"]
    predictor = dict(doc["spec"]["predictor"])
    model = predictor.pop("model", None)
    if model is not None:
        if set(model) - MODEL_FIELDS:
            raise Invalid(f"unknown model fields {sorted(set(model) - MODEL_FIELDS)}")
        runtime = runtimes.get(model.get("runtime"))
        if runtime is None:
            raise Invalid(f"model.runtime {model.get('runtime')!r} is not defined here")
        formats = {f["name"] for f in runtime["supportedModelFormats"]}
        if model["modelFormat"]["name"] not in formats:
            raise Invalid(f"runtime does not support model format {model['modelFormat']}")
        if model.get("protocolVersion", "v1") not in runtime["protocolVersions"]:
            raise Invalid(f"runtime does not speak protocol {model.get('protocolVersion')}")
    pod = {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS}
    return [_pod(pod)] if "containers" in pod else []


TFJOB_REPLICA_FIELDS = {"replicas", "restartPolicy", "template"}
TFJOB_REPLICA_TYPES = {"Chief", "Worker", "PS", "Evaluator", "Master"}


def _tfjob(doc: dict) -> list[dict]:
    """Kubeflow's TFJob: known replica types and fields; each replica's template a PodSpec."""
    assert doc["apiVersion"] == "kubeflow.org/v1", doc["apiVersion"]
    specs = doc["spec"]["tfReplicaSpecs"]
    if set(specs) - TFJOB_REPLICA_TYPES:
        raise Invalid(f"unknown replica types {sorted(set(specs) - TFJOB_REPLICA_TYPES)}")
    pods = []
    for kind, replica in specs.items():
        if set(replica) - TFJOB_REPLICA_FIELDS:
            raise Invalid(f"{kind}: unknown fields {sorted(set(replica) - TFJOB_REPLICA_FIELDS)}")
        if not any(c["name"] == "tensorflow" for c in replica["template"]["spec"]["containers"]):
            raise Invalid(f"{kind}: the training container must be named 'tensorflow'")
        pods.append(_pod(replica["template"]["spec"]))
    return pods


def main(folder: Path) -> int:
    docs = [(path, doc) for path in sorted(folder.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    runtimes = {doc["metadata"]["name"]: doc["spec"] for _, doc in docs
                if doc["kind"] == "ServingRuntime"}
    failures = 0
    for path, doc in docs:
        try:
            if doc["kind"] == "ServingRuntime":
                checked = _serving_runtime(doc)
            elif doc["kind"] == "InferenceService":
                checked = _inference_service(doc, runtimes)
            elif doc["kind"] == "TFJob":
                checked = _tfjob(doc)
            else:
                checked = [doc]
            for resource in checked:
                kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
            print(f"ok    {path.name}: {doc['kind']}")
        except (Invalid, KeyError, kubernetes_validate.ValidationError) as exc:
            failures += 1
            print(f"FAIL  {path.name}: {doc['kind']}: {getattr(exc, 'message', exc)!s}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else
                  Path(__file__).parent / "kubernetes"))
