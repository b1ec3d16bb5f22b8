"""``musicssl serve``: a local web page and HTTP API for key and beats (see
:mod:`musicssl.serve`). Parses options, starts uvicorn; nothing else.

Examples::

    musicssl serve                          # http://127.0.0.1:8000/
    musicssl serve --port 9000 --model skey-debian --workers 1
    curl -F file=@song.mp3 'http://127.0.0.1:8000/v1/key?notation=camelot'
"""

from __future__ import annotations

import argparse
import sys

from musicssl.cli.common import check_device, positive_int
from musicssl.errors import ConfigError
from musicssl.key.registry import model_names

EPILOG = """examples:
  musicssl serve                        # then open http://127.0.0.1:8000/
  musicssl serve --port 9000 --max-upload-mb 50
  curl -F file=@song.mp3 'http://127.0.0.1:8000/v1/key?notation=camelot'
  curl -F file=@song.mp3 'http://127.0.0.1:8000/v1/beats'

needs the optional extra: pip install 'musicssl[serve]'"""


def add_parser(subparsers, name: str = "serve", help_text: str = "serve a local web page and HTTP API for key and beats"):
    """Register ``musicssl serve`` on ``subparsers``."""
    from musicssl.serve.analysis import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_UPLOAD_MB

    p = subparsers.add_parser(
        name, help=help_text, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start a local web server: a page to drop audio files on (key, key over time, "
                    "beats, click track) and an HTTP API (POST /v1/key, POST /v1/beats, GET /v1/health, "
                    "OpenAPI docs at /docs) answering with the records of musicssl key/beats --format json.")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1: this machine only; "
                          "0.0.0.0 exposes the server to the network)")
    net.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    model = p.add_argument_group("models")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument("--model", choices=model_names(), default="default",
                        help="key model, as in musicssl key --model (default: skey-band+kostka-payne)")
    choice.add_argument("--checkpoint", metavar="PATH", default=None, help="a key checkpoint file")
    model.add_argument("--beats-checkpoint", metavar="PATH", default=None,
                       help="a ZeroNS beat model, then the default activation of POST /v1/beats "
                            "(default: none: onset strength, and the shipped ZeroNS model for activation=zerons)")
    model.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the networks run")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                        help=f"largest upload accepted; larger ones get HTTP 413 (default {DEFAULT_MAX_UPLOAD_MB:g})")
    limits.add_argument("--max-duration", type=float, default=DEFAULT_MAX_DURATION_S, metavar="SECONDS",
                        help=f"longest audio accepted; longer gets HTTP 422 (default {DEFAULT_MAX_DURATION_S:g})")
    limits.add_argument("--workers", type=positive_int, default=2, metavar="N",
                        help="analyses run at the same time (default 2); others wait in a queue")
    limits.add_argument("--max-pending", type=positive_int, default=64, metavar="N",
                        help="analyses running or queued before new ones get HTTP 503 (default 64)")
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    """Start the server; returns when it is stopped (Ctrl-C)."""
    try:
        import uvicorn

        from musicssl.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(f"musicssl serve needs the 'serve' extra ({exc.name} is missing): "
                          "pip install 'musicssl[serve]'") from None
    from musicssl.serve.analysis import ServeConfig

    if not args.max_upload_mb > 0 or not args.max_duration > 0:
        raise ConfigError("--max-upload-mb and --max-duration must be positive")
    check_device(args.device)
    config = ServeConfig(key_model=args.checkpoint or args.model, beats_checkpoint=args.beats_checkpoint,
                         device=args.device, max_upload_bytes=int(args.max_upload_mb * 1e6),
                         max_duration_s=args.max_duration, workers=args.workers, max_pending=args.max_pending)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"musicssl serve: note: listening on {args.host}: other machines can reach this server; "
              "it has no authentication", file=sys.stderr)
    print(f"musicssl serve: loading models, then serving on http://{_url_host(args.host)}:{args.port}/ "
          "(Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="info")
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
