"""Entry point of the ``musicssl`` command: dispatches to one module per subcommand.

Each subcommand module defines ``add_parser(subparsers, name, help_text)``
(adds the subcommand ``name`` to ``subparsers``, registers its arguments,
sets ``func``) and is imported only when used, so ``musicssl key`` does not
pay for importing the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from musicssl import __version__
from musicssl.errors import MusicsslError

#: subcommand name -> (module under musicssl.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "key": ("key", "estimate the key of audio files or folders"),
    "beats": ("beats", "track the beats of audio files or folders"),
    "train": ("train", "train a key model (STONE, 24-STONE, S-KEY, supervised) from audio"),
    "train-beats": ("train_beats", "pretrain Zero-Note Samba beat networks from unlabeled audio"),
    "evaluate": ("evaluate", "score key estimators on a labelled dataset"),
    "evaluate-beats": ("evaluate_beats", "score beat trackers on a dataset with beat annotations"),
    "calibrate": ("calibrate", "calibrate a trained 24-key model and store the mapping"),
    "serve": ("serve", "serve a local web page and HTTP API for key and beats"),
    "export-onnx": ("export_onnx", "export a key or ZeroNS beat network to ONNX"),
}


def build_parser(only: str | None = None, full: bool = False) -> argparse.ArgumentParser:
    """The parser. Only the module of subcommand ``only`` is imported (the others get a
    stub that lists them in ``musicssl --help``); ``full``: every subcommand's."""
    parser = argparse.ArgumentParser(
        prog="musicssl",
        description="Self-supervised musical key and beat estimation (STONE, S-KEY, Zero-Note Samba).",
    )
    parser.add_argument("--version", action="version", version=f"musicssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if not full and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(f"musicssl.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"musicssl.cli.{module_name}":
                raise
            continue
        module.add_parser(sub, name, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MusicsslError as exc:
        print(f"musicssl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
