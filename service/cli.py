"""cnn-serve [--host --port --workers]: run the service with uvicorn.
cnn-serve import SOURCE --name NAME [...]: make a Keras model a served version (--help).

Flags override the CNN_SERVE_HOST / CNN_SERVE_PORT / CNN_SERVE_WORKERS settings.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from service.settings import Settings

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import"]:  # cnn-serve import SOURCE --name NAME ...
        from service.settings import model_dir_setting
        from training import importer

        return importer.main(argv[1:], model_dir_setting())

    try:
        settings = Settings()  # fail fast, naming the variables, before forking workers
    except ValidationError as exc:  # without the values given: they may be secrets
        problems = "\n".join(
            f"  {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        print(
            f"cnn-serve: invalid configuration (CNN_SERVE_* variables):\n{problems}",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="cnn-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="processes; each loads every model (see README for memory)",
    )
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
