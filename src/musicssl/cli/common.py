"""What the subcommands share: the batch subcommands' (``key``, ``beats``) input and
output options, usage errors, input checks, the device check, resuming and the progress
switch; positive-integer options and the key models' ``--transpositions`` and ``--prior`` (``key``, ``evaluate``)."""

from __future__ import annotations

import argparse
import sys

from musicssl.errors import ConfigError
from musicssl.io.records import is_ok


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_transpositions_argument(parser) -> None:
    """``--transpositions N``: transposed crops a key network averages (``KeyEstimator``)."""
    parser.add_argument("--transpositions", type=positive_int, default=None, metavar="N",
                        help="average key networks over N transposed crops, one semitone apart "
                             "(default: 12; 1: the papers' single crop)")


def add_prior_argument(parser) -> None:
    """``--prior PROFILE|none``: template prior of key networks (``KeyEstimator``)."""
    from musicssl.key.registry import NO_PRIOR
    from musicssl.key.templates import PROFILES

    parser.add_argument("--prior", choices=(NO_PRIOR, *PROFILES), default=None,
                        help="multiply a key network's probabilities by a template's (default: as the "
                             "model spec says; the default model uses kostka-payne; none: the network alone)")


def tuning_setting(text: str):
    """argparse type of ``--tuning``: a mode (``compensate``, ``report``, ``off``) or cents."""
    from musicssl.dsp.tuning import check_tuning

    try:
        return check_tuning(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("tuning ")) from None


def add_tuning_argument(parser) -> None:
    """``--tuning MODE|CENTS`` of the key commands (``compute_features(tuning=...)``)."""
    parser.add_argument("--tuning", type=tuning_setting, default="compensate", metavar="MODE",
                        help="compensate (default): estimate each file's deviation from A = 440 Hz and "
                             "move the CQT bins onto its semitones; report: estimate it, do not compensate; "
                             "off: neither; a number: a known deviation in cents (e.g. -31.8). Key records "
                             "carry tuning_cents")


def add_backend_argument(parser) -> None:
    """``--backend torch|onnx``: what runs the networks (``.onnx`` files: onnx)."""
    from musicssl.backends import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run the network on torch or on onnxruntime (needs musicssl[onnx]; a torch "
                             "checkpoint is exported once and cached); default: torch, onnx for .onnx files")


def add_batch_arguments(parser, paths_help: str, format_help: str):
    """Add the options every batch subcommand has (``PATH...``, ``--format``,
    ``-o``, ``--skip-existing``, ``--no-progress``); returns the "output" group
    so the caller can add its own output options to it."""
    from musicssl.io.records import FORMATS

    parser.add_argument("paths", nargs="+", metavar="PATH", help=paths_help)
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default=None, help=format_help)
    out.add_argument("-o", "--output", metavar="FILE", default=None,
                     help="write the records to FILE, atomically (default: standard output)")
    out.add_argument("--skip-existing", "--resume", dest="skip_existing", action="store_true",
                     help="keep records already in -o FILE and analyse only the other files "
                          "(default: off, analyse all)")
    out.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show a progress bar (default: a bar on standard error when it is a "
                          "terminal and there are several files)")
    return out


def usage_error(args, command: str, message: str) -> int:
    """Print the usage line (when the parser is known) and ``message``; returns exit status 2."""
    parser = getattr(args, "_parser", None)
    if parser is not None:
        parser.print_usage(sys.stderr)
    print(f"musicssl {command}: error: {message}", file=sys.stderr)
    return 2


def batch_inputs(args, command: str) -> list[str] | None:
    """The audio files named by ``args.paths`` (files, folders, globs), checked
    against ``args.output`` / ``args.skip_existing``; ``None`` after printing a
    usage error (no files found, ``--skip-existing`` without ``-o``, output
    file among the inputs)."""
    from musicssl.io.files import expand_inputs, path_identity

    if args.skip_existing and args.output is None:
        usage_error(args, command, "--skip-existing needs an output file (-o FILE)")
        return None
    files = expand_inputs(args.paths)
    if not files:
        usage_error(args, command, "no audio files found in " + ", ".join(repr(p) for p in args.paths))
        return None
    if args.output is not None and path_identity(args.output) in {path_identity(f) for f in files}:
        usage_error(args, command, f"the output file {args.output} is also an input")
        return None
    return files


def check_device(device: str) -> None:
    """Raise :class:`ConfigError` for ``cuda`` when no CUDA device is available."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here")


def files_to_do(files: list[str], output, args, command: str) -> list[str]:
    """``files`` not yet recorded in ``output`` (a :class:`~musicssl.io.records.RecordOutput`
    opened with ``resume``); says on stderr how many are skipped."""
    from musicssl.io.files import path_identity

    done = output.done()
    todo = [f for f in files if path_identity(f) not in done]
    if len(files) > len(todo):
        print(f"musicssl {command}: {len(files) - len(todo)} of {len(files)} files already in {args.output}; "
              f"analysing the other {len(todo)}", file=sys.stderr)
    return todo


def show_progress(args, n_files: int) -> bool:
    """A progress bar only when asked, for several files, on a terminal stderr,
    and when stdout is not the terminal the records go to."""
    return bool(args.progress and n_files > 1 and sys.stderr.isatty()
                and (args.output is not None or not sys.stdout.isatty()))


def write_records(records, n_files: int, output, args, command: str) -> int:
    """Write each record of ``records`` (an iterator over ``n_files`` files) to ``output``;
    returns the number of failed files (and says so on stderr). On Ctrl-C says which file
    holds the finished records, then re-raises."""
    failed = 0
    try:
        with output:
            for record in records:
                output.write(record)
                failed += not is_ok(record)
    except KeyboardInterrupt:
        if args.output is not None:
            print(f"musicssl {command}: interrupted after {len(output.new)} files; {args.output} holds them. "
                  f"Rerun with --skip-existing to continue.", file=sys.stderr)
        raise
    if failed:
        print(f"musicssl {command}: {failed} of {n_files} files failed", file=sys.stderr)
    return failed


def add_ray_arguments(parser) -> None:
    """``--ray [ADDRESS]``, ``--shard-size``, ``--actors``: run a batch command on Ray
    (:func:`musicssl.distributed.run_ray_batch`)."""
    from musicssl.distributed import DEFAULT_SHARD_SIZE

    ray = parser.add_argument_group("Ray cluster (pip install 'musicssl[ray]')")
    ray.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run on a Ray cluster with Ray Data: ADDRESS such as auto, HOST:6379 or "
                          "ray://HOST:10001, or nothing for $RAY_ADDRESS, else a local cluster; -o names a "
                          "folder that gets one JSONL file per shard, part-00000.jsonl, ... "
                          "(default: off, this machine only)")
    ray.add_argument("--shard-size", type=positive_int, default=DEFAULT_SHARD_SIZE, metavar="N",
                     help=f"with --ray: files per output shard (default: {DEFAULT_SHARD_SIZE}; keep "
                          "it across --skip-existing reruns)")
    ray.add_argument("--actors", type=positive_int, default=1, metavar="N",
                     help="with --ray: model replicas (Ray actors) running the network (default: 1)")


def run_on_ray(files: list[str], prepare, make_finish, args, command: str) -> int:
    """Run the library's ``prepare``/``make_finish()`` steps over ``files`` on Ray, shards into the folder
    ``args.output``; prints a summary on stderr and returns the exit status."""
    import os

    from musicssl.distributed import run_ray_batch

    if args.output is None:
        return usage_error(args, command, "--ray needs an output folder (-o DIR) for its shard files")
    if getattr(args, "format", None) not in (None, "jsonl"):
        return usage_error(args, command, "--ray writes JSONL shard files; leave out --format")
    summary = run_ray_batch(files, prepare, make_finish, args.output, address=args.ray or None,
                            shard_size=args.shard_size, batch_size=getattr(args, "batch_size", 8),
                            actors=args.actors, skip_existing=args.skip_existing)
    if summary.skipped:
        print(f"musicssl {command}: {summary.skipped} of {len(files)} files already in {args.output}",
              file=sys.stderr)
    print(f"musicssl {command}: {summary.analysed} files analysed on Ray ({summary.failed} failed); "
          f"{len(summary.written)} shard files written in {os.fspath(args.output)}", file=sys.stderr)
    return 1 if summary.failed else 0
