"""`mase serve`: the REST service with its dashboard (uvicorn).

One process by default; `--workers N` (MASE_WORKERS) starts N uvicorn worker processes on
one address, which share jobs, locks and cache invalidations through the database (api.jobs,
api.cache). SIGINT or SIGTERM stops the service cleanly: each worker stops its job processes
(and their children), marks its runs interrupted and exits; no process of ours outlives it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os


def uvicorn_options(settings) -> dict:
    """The uvicorn settings of the service (also used by bench.load_service for its ceiling app)."""
    from api import http

    options = {"access_log": settings.access_log, "limit_concurrency": settings.max_connections,
               "timeout_keep_alive": 5, "timeout_graceful_shutdown": 5}
    if http.TimedHttpToolsProtocol is not None:
        options["http"] = http.TimedHttpToolsProtocol
    try:
        import uvloop  # noqa: F401 - uvicorn's fast event loop, when installed

        options["loop"] = "uvloop"
    except ImportError:
        options["loop"] = "asyncio"
    return options


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.security import ensure_tokens_file
    from api.settings import Settings

    settings = Settings.from_env()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("database_url", args.database_url),
                                   ("workers", args.workers)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    if settings.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {settings.workers}")
    created = ensure_tokens_file(settings.tokens_file)
    dashboard = f"http://{settings.host}:{settings.port}/dashboard"
    if created:
        # shown once, at creation (the #fragment never reaches the server or its log)
        print(f"mase: created {settings.tokens_file} with a new operator token", flush=True)
        print(f"mase: dashboard at {dashboard}#token={created}", flush=True)
    else:
        print(f"mase: dashboard at {dashboard} (operator tokens are in {settings.tokens_file})", flush=True)
    print(f"mase: API docs at http://{settings.host}:{settings.port}/docs; "
          f"database {settings.database_url.split('://')[0]}; {settings.workers} worker process(es)", flush=True)
    options = uvicorn_options(settings)
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                    **options)
        return 0
    # each worker builds the app from the environment: hand it the command line's overrides
    os.environ.update({"MASE_HOST": settings.host, "MASE_PORT": str(settings.port),
                       "MASE_DATABASE_URL": settings.database_url, "MASE_WORKERS": str(settings.workers)})
    uvicorn.run("api.app:app_from_env", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=args.log_level, **options)
    return 0


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="run the REST service and its dashboard (settings: MASE_* variables)")
    serve.add_argument("--host", help="bind address (default MASE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default MASE_PORT or 8000)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default MASE_DATABASE_URL or sqlite:///var/mase.db)")
    serve.add_argument("--workers", type=int, help="uvicorn worker processes (default MASE_WORKERS or 1)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(func=cmd_serve)
