import os
import socket

import pytest
from pydantic import ValidationError

from service.cli import main
from service.settings import Settings, usable_cores


def test_environment_configures_everything(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_SERVE_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("CNN_SERVE_DEVICE", "cpu")
    monkeypatch.setenv("CNN_SERVE_CORS_ORIGINS", "http://a.example, http://b.example")
    monkeypatch.setenv("CNN_SERVE_MAX_UPLOAD_BYTES", "1234")
    monkeypatch.setenv("CNN_SERVE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CNN_SERVE_BATCHING__MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("CNN_SERVE_BATCHING_OVERRIDES", '{"cifar10": {"max_batch_size": 4}}')
    s = Settings()
    assert s.model_dir == tmp_path.resolve() and s.device == "cpu"
    assert s.cors_origins == ["http://a.example", "http://b.example"]
    assert s.max_upload_bytes == 1234 and s.log_level == "debug"
    assert s.batch_policy("digit_odd").max_batch_size == 16
    assert s.batch_policy("cifar10").max_batch_size == 4


@pytest.mark.parametrize(
    "var,value,complaint",
    [
        ("CNN_SERVE_MODEL_DIR", "/does/not/exist", "does not exist"),
        ("CNN_SERVE_DEVICE", "tpu", "'auto', 'cpu' or 'gpu'"),
        ("CNN_SERVE_MAX_UPLOAD_BYTES", "-1", "greater than 0"),
    ],
)
def test_invalid_settings_fail_at_start_with_the_variable_named(
    monkeypatch, capsys, var, value, complaint
):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=complaint):
        Settings()
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "CNN_SERVE_" in err and complaint in err


def test_a_taken_grpc_port_fails_at_start_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("CNN_SERVE_GRPC_PORT", "0")  # main() sets both for the workers:
    monkeypatch.delenv("CNN_SERVE_HOST", raising=False)  # restored after the test
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--grpc-port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in err and "--grpc-port" in err


@pytest.mark.parametrize(
    "cpu_max,expected",
    [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None), (None, None)],
)
def test_one_per_core_means_the_cores_a_cgroup_limit_allows(tmp_path, cpu_max, expected):
    """--cpus 1.5 on a bigger machine: 2 decode processes, not one per host core."""
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(path) == (affinity if expected is None else min(expected, affinity))
