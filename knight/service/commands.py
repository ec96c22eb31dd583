"""Typer commands of the service: `knight serve` and `knight token create`."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from knight import cli_options as options
from knight.errors import KnightWarning, UsageError

TokenFileOpt = Annotated[
    Path,
    typer.Option(
        "--token-file",
        envvar="KNIGHT_TOKEN_FILE",
        help="File of accepted token hashes and scopes ($KNIGHT_TOKEN_FILE).",
    ),
]

token_app = typer.Typer(help="Bearer tokens for `knight serve`.", no_args_is_help=True)


@token_app.command("create")
def token_create_cmd(
    scope: Annotated[
        str, typer.Option("--scope", help="ro (read only) or rw (also evaluate and run).")
    ],
    token_file: TokenFileOpt = Path("knight.tokens"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Create a token: print it once, and append only its sha256 and scope to the token file."""
    from knight.service.tokens import create_token

    token = create_token(scope, token_file)
    if as_json:
        sys.stdout.write(
            json.dumps({"token": token, "scope": scope, "token_file": str(token_file)}) + "\n"
        )
    else:
        sys.stdout.write(token + "\n")
        sys.stderr.write(
            f"{scope} token created; {token_file} keeps only its hash, so store it now\n"
        )


def serve_cmd(
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (localhost by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    db: Annotated[
        str, typer.Option("--db", help="SQLite path or SQLAlchemy URL of the store.")
    ] = "knight.db",
    workers: options.WorkersOpt = None,
    token_file: TokenFileOpt = Path("knight.tokens"),
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Run logs and the server's child list.")
    ] = Path("knight-service"),
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Private run cache (default: STATE_DIR/cache)."),
    ] = None,
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body, bytes (413 beyond).")
    ] = 1_048_576,
    max_queue: Annotated[
        int, typer.Option("--max-queue", help="Evaluations queued or running at once (429 beyond).")
    ] = 64,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            help="Seconds a waiting evaluation request is held (504 beyond; the job goes on).",
        ),
    ] = 600.0,
    run_timeout: Annotated[
        float, typer.Option("--run-timeout", help="Wall-clock limit per simulation, seconds.")
    ] = 300.0,
    memory_mb: Annotated[
        int, typer.Option("--memory-mb", help="Memory limit per simulation worker, MiB.")
    ] = 6144,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    evaluator: Annotated[
        str,
        typer.Option(
            "--evaluator",
            help="Where evaluations and runs judge: local, ray ($RAY_ADDRESS or a local Ray) "
            "or ray://HOST:PORT (a Ray cluster).",
        ),
    ] = "local",
) -> None:
    """Serve evaluations and runs over HTTP (docs/service.md); every endpoint but health needs a token."""
    import uvicorn

    from knight.evaluation.ray_evaluator import RayEvaluator, parse_evaluator
    from knight.service.app import ServiceSettings, create_app
    from knight.service.tokens import TokenStore
    from knight.store import open_store

    if not 0 < port < 65536:
        raise UsageError("--port must be between 1 and 65535")
    for name, value in (
        ("--workers", workers or 1),
        ("--max-body", max_body),
        ("--max-queue", max_queue),
        ("--memory-mb", memory_mb),
    ):
        if value < 1:
            raise UsageError(f"{name} must be at least 1")
    if request_timeout <= 0 or run_timeout <= 0:
        raise UsageError("timeouts must be positive")
    kind, address = parse_evaluator(evaluator)  # http(s):// is refused: no server behind a server
    tokens = TokenStore.load(token_file)
    open_store(db, "write", create=True).close()  # a bad --db fails here, in one line
    # An unreachable cluster fails here, in one line; this connection serves the app and ends
    # with it.
    cluster = RayEvaluator(address, cpus_per_task=workers or 1) if kind == "ray" else None
    if host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(
            f"serving on {host}: tokens travel in clear text unless a TLS proxy fronts this "
            "server (docs/service.md)",
            KnightWarning,
            stacklevel=1,
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = ServiceSettings(
        db=db,
        tokens=tokens,
        state_dir=state_dir.resolve(),
        cache_dir=(cache_dir or state_dir / "cache").resolve(),
        workers=workers,
        max_body_bytes=max_body,
        max_queue=max_queue,
        request_timeout_s=request_timeout,
        run_timeout_s=run_timeout,
        memory_mb=memory_mb,
        evaluator=evaluator,
    )
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )
    finally:
        if cluster is not None:
            cluster.close()


def remote_evaluator(
    url: str, token: str | None, machine: str | None, max_seeds: int | None = None
):
    """The `--evaluator URL` of `knight run`/`knight eval`: a RemoteEvaluator, checked first."""
    from knight.service.remote import RemoteEvaluator

    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--evaluator must be an http:// or https:// URL, not {url!r}")
    if not token:
        raise UsageError("--evaluator needs a token: --token or $KNIGHT_TOKEN")
    return RemoteEvaluator(
        url, token, machine, max_seeds=max_seeds, note=lambda text: sys.stderr.write(text + "\n")
    )


def register(app: typer.Typer) -> None:
    """Add `serve` and `token` to the `knight` command line."""
    app.command("serve")(serve_cmd)
    app.add_typer(token_app, name="token")


EvaluatorOpt = Annotated[
    str | None,
    typer.Option("--evaluator", help="Judge on a Knight server at this URL instead of locally."),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="KNIGHT_TOKEN", help="Bearer token for --evaluator ($KNIGHT_TOKEN)."
    ),
]
