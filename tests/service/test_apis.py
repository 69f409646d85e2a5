"""The table of APIs agrees with the routes: every documented route carries a tag of the API
its path belongs to, so its errors, metrics label and key exemption are that API's."""

from __future__ import annotations

from service.apis import NATIVE, OIP, TF_SERVING, api_of, is_probe


def test_every_documented_operation_is_tagged_by_the_api_its_path_belongs_to(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {api_of(path) for path in paths} == {NATIVE, OIP, TF_SERVING}
    for path, operations in paths.items():
        names = {name for name, _ in api_of(path).tags}
        for operation in operations.values():
            assert operation["tags"] and set(operation["tags"]) <= names, (path, operation)


def test_paths_belong_by_whole_segments():
    assert api_of("/v2") is OIP and api_of("/v2/models/x/infer") is OIP
    assert api_of("/v2x") is NATIVE and api_of("/v1models") is NATIVE
    assert api_of("/v1/models/x:predict") is TF_SERVING
    assert is_probe("/health/live") and is_probe("/v2/health/ready")
    assert not is_probe("/v2/models/health/ready") and not is_probe("/healthz")
