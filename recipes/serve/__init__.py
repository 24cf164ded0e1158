"""`stenograph serve`: an HTTP and WebSocket speech service with a live-captions page.

Usage:
    stenograph serve exp/demo                       # http://127.0.0.1:8000/
    STENOGRAPH_API_KEY=secret stenograph serve exports/demo --host 0.0.0.0 --port 9000

MODEL is an experiment folder or a SavedModel from `stenograph export`; it decodes as
`stenograph transcribe` does (the tuned LM, alpha, beta it carries; the same
`--decoder`, `--lm`, `--alpha`, `--beta`, `--hotword` overrides). The server speaks
OpenAI's transcription API (`POST /v1/audio/transcriptions`), streams live captions
over `WS /v1/stream`, and serves a page at `/` to speak into or drop files on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

#: The `transcribe` options that `serve` shares (decoder choice, weights, windows).
SHARED_TRANSCRIBE_OPTIONS = (
    "weights",
    "decoder",
    "beam_width",
    "lm_path",
    "alpha",
    "beta",
    "unk_score_offset",
    "hotword",
    "window",
    "overlap",
)
API_KEY_VARIABLE = "STENOGRAPH_API_KEY"


def register(subparsers: Any) -> None:
    """Adds the `serve` command to the `stenograph` command line."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI transcription API, live WebSocket, web page)",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def _add_transcribe_options(parser: argparse.ArgumentParser) -> None:
    """Copies the shared options from `transcribe`'s parser, so both stay one definition."""
    from ..transcribe import add_arguments as add_transcribe_arguments

    template = argparse.ArgumentParser(add_help=False)
    add_transcribe_arguments(template)
    for action in template._actions:
        if action.dest in SHARED_TRANSCRIBE_OPTIONS:
            parser._add_action(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the serve options to `parser`."""
    parser.add_argument("model", help="experiment folder or exported SavedModel")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on the API (default: ${API_KEY_VARIABLE})",
    )
    _add_transcribe_options(parser)
    parser.add_argument("--max-batch", type=int, default=16, help="windows per model call")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long a model call waits for more requests to batch (default 10 ms)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="transcription requests in flight before new ones get 503 (default 64)",
    )
    parser.add_argument("--max-streams", type=int, default=32, help="live streams (default 32)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=100.0, help="largest request body (default 100 MB)"
    )
    parser.add_argument(
        "--upload-timeout",
        type=float,
        default=60.0,
        help="seconds a client may take to send a request body (default 60)",
    )
    parser.add_argument(
        "--stream-idle-timeout",
        type=float,
        default=30.0,
        help="seconds a live stream may send nothing before it is closed (default 30)",
    )


def settings_from_args(args: argparse.Namespace) -> Any:
    """`ServeSettings` from parsed options (decoder options as `transcribe` builds them)."""
    from ..decoding import tuned_lm_available, with_tuned_defaults
    from ..transcribe import decoder_options
    from .service import ServeSettings

    options = with_tuned_defaults(decoder_options(args, tuned_lm_available(args.model)), args.model)
    return ServeSettings(
        model=args.model,
        weights=args.weights,
        decoder_options=options,
        api_key=args.api_key or os.environ.get(API_KEY_VARIABLE) or None,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        max_queue=args.max_queue,
        max_streams=args.max_streams,
        max_upload_mb=args.max_upload_mb,
        upload_timeout=args.upload_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        window_seconds=args.window,
        overlap_seconds=args.overlap,
    )


def run(args: argparse.Namespace) -> int:
    """Runs the server until interrupted; 1 if the model cannot be loaded."""
    import uvicorn

    from .app import create_app
    from .service import SpeechService

    settings = settings_from_args(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(
            f"serve: warning: listening on {args.host} without an API key; anyone who can "
            f"reach it can use it (set --api-key or ${API_KEY_VARIABLE})",
            file=sys.stderr,
        )
    failed: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop_on_load_error(error: BaseException) -> None:
        failed.append(error)
        if server is not None:
            server.should_exit = True

    app = create_app(SpeechService(settings), on_load_error=stop_on_load_error)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        ws="websockets-sansio",
        access_log=False,
    )
    server = uvicorn.Server(config)
    print(
        f"serve: http://{args.host}:{args.port}/ (the model loads in the background; "
        "GET /healthz answers 200 once it is ready)",
        file=sys.stderr,
    )
    server.run()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command on its own (`python -m stenograph.recipes.serve`)."""
    parser = argparse.ArgumentParser(prog="stenograph serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


__all__ = ["add_arguments", "main", "register", "run", "settings_from_args"]
