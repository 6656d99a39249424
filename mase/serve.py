"""`mase serve`: the REST service with its dashboard (uvicorn)."""
from __future__ import annotations

import argparse
import dataclasses


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.security import ensure_tokens_file
    from api.settings import Settings

    settings = Settings.from_env()
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("database_url", args.database_url))
                 if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    created = ensure_tokens_file(settings.tokens_file)
    dashboard = f"http://{settings.host}:{settings.port}/dashboard"
    if created:
        # shown once, at creation (the #fragment never reaches the server or its log)
        print(f"mase: created {settings.tokens_file} with a new operator token", flush=True)
        print(f"mase: dashboard at {dashboard}#token={created}", flush=True)
    else:
        print(f"mase: dashboard at {dashboard} (operator tokens are in {settings.tokens_file})", flush=True)
    print(f"mase: API docs at http://{settings.host}:{settings.port}/docs; "
          f"database {settings.database_url.split('://')[0]}", flush=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def add_serve_parser(sub) -> None:
    serve = sub.add_parser("serve", help="run the REST service and its dashboard (settings: MASE_* variables)")
    serve.add_argument("--host", help="bind address (default MASE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default MASE_PORT or 8000)")
    serve.add_argument("--database-url", help="SQLAlchemy URL (default MASE_DATABASE_URL or sqlite:///var/mase.db)")
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    serve.set_defaults(func=cmd_serve)
