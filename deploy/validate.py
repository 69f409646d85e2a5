"""Validate every manifest in deploy/kubernetes against the Kubernetes schemas (strict).

KServe's InferenceService has no schema in kubernetes-validate, so its predictor - a PodSpec
plus KServe's replica fields - is validated as the PodSpec of a Pod.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import yaml

KSERVE_COMPONENT_FIELDS = {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                           "containerConcurrency", "timeout", "canaryTrafficPercent", "logger",
                           "batcher", "labels", "annotations", "deploymentStrategy"}
K8S_VERSION = "1.30.0"


def as_pod(isvc: dict) -> dict:
    spec = {k: v for k, v in isvc["spec"]["predictor"].items()
            if k not in KSERVE_COMPONENT_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}


def main(folder: Path) -> int:
    failures = 0
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if doc["kind"] == "InferenceService":
                assert doc["apiVersion"] == "serving.kserve.io/v1beta1", doc["apiVersion"]
                doc = as_pod(doc)
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
                print(f"ok    {path.name}: {doc['kind']}")
            except kubernetes_validate.ValidationError as exc:
                failures += 1
                print(f"FAIL  {path.name}: {doc['kind']}: {exc.message}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else
                  Path(__file__).parent / "kubernetes"))
