"""cnn-serve [--host --port --grpc-port --workers]: run the service with uvicorn (and gRPC).
cnn-serve import SOURCE --name NAME [...]: make a Keras model a served version (--help).
cnn-serve predict PATH... [...]: classify image files, folders and zips (--help).
cnn-serve evaluate DATA [...]: score a model on labelled images, with a report (--help).

Flags override the CNN_SERVE_HOST / CNN_SERVE_PORT / CNN_SERVE_GRPC_PORT / CNN_SERVE_WORKERS
settings.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from service.settings import Settings

    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings()  # fail fast, naming the variables, before forking workers
    except ValidationError as exc:  # without the values given: they may be secrets
        for e in exc.errors(include_url=False, include_input=False):  # one line each
            where = "CNN_SERVE_" + "__".join(map(str, e["loc"])).upper() if e["loc"] else "settings"
            message = e["msg"].removeprefix("Value error, ")
            print(f"cnn-serve: invalid configuration: {where}: {message}", file=sys.stderr)
        return 2
    if argv[:1] == ["import"]:  # cnn-serve import SOURCE --name NAME ...
        return _import(argv[1:], settings)
    if argv[:1] in (["predict"], ["evaluate"]):
        from service import offline_commands

        return offline_commands.main(argv[0], argv[1:])
    parser = argparse.ArgumentParser(
        prog="cnn-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--grpc-port", type=int, default=settings.grpc_port, help="0 turns gRPC off"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="processes; each loads every model (see README for memory)",
    )
    args = parser.parse_args(argv)
    # the app's settings (in each worker) serve gRPC where the flags say HTTP is served
    os.environ.update(CNN_SERVE_HOST=args.host, CNN_SERVE_GRPC_PORT=str(args.grpc_port))
    taken = _taken(args.host, args.grpc_port) if args.grpc_port and args.workers == 1 else None
    if taken:
        print(
            f"cnn-serve: cannot listen for gRPC on {args.host}:{args.grpc_port} ({taken}); "
            "pass --grpc-port (CNN_SERVE_GRPC_PORT) a free port, or 0 to turn gRPC off",
            file=sys.stderr,
        )
        return 2

    import tempfile

    import uvicorn

    from service.metrics import MULTIPROC_ENV

    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # workers are separate processes: let prometheus-client aggregate them
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="cnn-serve-metrics-")

    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,  # the app configures logging (JSON lines, request IDs)
        http="service.http_guard:GuardedHttpToolsProtocol",
        # seconds as floats: uvicorn hands them to call_later; its hints say int
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
    )
    return 0


def _import(argv: list[str], settings) -> int:
    """The model file is read in a confined process, within the server's bounds on models
    (the same settings): an operator's import is held to what an upload is."""
    from training import import_command

    return import_command.main(
        argv, settings.model_dir, settings.model_bounds(), settings.import_limits()
    )


def _taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None (checked before the models load, so
    a taken port fails in a second with one line, not after them with a traceback)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as servers bind: a port whose old connections linger (TIME_WAIT) is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


if __name__ == "__main__":
    sys.exit(main())
