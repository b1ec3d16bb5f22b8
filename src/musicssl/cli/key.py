"""``musicssl key PATH...``: the key of audio files, folders (recursive) and globs.

Examples::

    musicssl key song.mp3
    musicssl key music/ --format jsonl -o keys.jsonl --jobs 4
    musicssl key music/ --format jsonl -o keys.jsonl --skip-existing   # resume
    musicssl key "sets/**/*.flac" --notation camelot --probabilities
    musicssl key song.flac --local --window 20 --hop 5
    musicssl key music/ --write-tags --dry-run
    musicssl key /mnt/music --ray auto -o keys/     # on a Ray cluster, one JSONL file per shard

Output per file: text ``path<TAB>key<TAB>confidence`` (default), or CSV /
JSON / JSONL records. JSON and JSONL records always carry all 24
probabilities (mir_eval labels, canonical order C major … B minor); text and
CSV add them with ``--probabilities``. A file that cannot be analysed gives
an error record (``path``, ``error`` type, ``message``) and the run goes on.

Exit status: 0 all files analysed, 1 some failed, 2 usage error (including
no input files found), 130 interrupted (the output file keeps every finished
record; rerun with ``--skip-existing`` to continue).
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings

from musicssl.cli.common import (
    add_backend_argument,
    add_batch_arguments,
    add_prior_argument,
    add_ray_arguments,
    add_transpositions_argument,
    add_tuning_argument,
    batch_inputs,
    check_device,
    files_to_do,
    positive_int,
    run_on_ray,
    show_progress,
    usage_error,
    write_records,
)
from musicssl.io.records import RecordOutput, format_from_path
from musicssl.io.tags import ID3_VERSIONS
from musicssl.key.analysis import (
    EstimatorSpec,
    KeyOptions,
    TagOptions,
    analyse_files,
    feature_step,
    record_step_on_worker,
)
from musicssl.key.records import key_format
from musicssl.key.registry import model_names
from musicssl.keys import NOTATIONS

EPILOG = """examples:
  musicssl key song.mp3
  musicssl key music/ -o keys.jsonl --jobs 4
  musicssl key music/ -o keys.jsonl --skip-existing      # resume an interrupted run
  musicssl key "sets/**/*.flac" --notation camelot --probabilities
  musicssl key song.flac --local --window 20 --hop 5
  musicssl key music/ --write-tags --dry-run
  musicssl key song.flac --tuning report                 # report the tuning, do not compensate
  musicssl key music/ --checkpoint skey.onnx             # onnxruntime (musicssl export-onnx)
  musicssl key /mnt/music --ray auto -o keys/            # Ray cluster: keys/part-00000.jsonl, ...

exit status: 0 all files analysed, 1 some files failed, 2 usage error, 130 interrupted"""


def add_parser(subparsers, name: str = "key", help_text: str = "estimate the key of audio files or folders"):
    """Register ``musicssl key`` on ``subparsers``."""
    p = subparsers.add_parser(
        name, help=help_text,
        description="Estimate the key of audio files, folders (searched recursively) and glob patterns.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = add_batch_arguments(
        p, "audio files, folders (searched recursively) or glob patterns ('**' spans folders)",
        "output format (default: from the -o extension .csv/.json/.jsonl, else text)")
    out.add_argument("--notation", choices=NOTATIONS, default="standard",
                     help="key names: standard ('Eb major', the default), camelot ('5B'), "
                          "openkey ('10d'), tkey ('Eb')")
    out.add_argument("--probabilities", action="store_true",
                     help="include all 24 key probabilities in text/CSV output; JSON/JSONL always have "
                          "them (default: off)")
    out.add_argument("--local", action="store_true",
                     help="also estimate keys over time (sliding windows) and the segments "
                          "where the key changes (default: off, one key per file)")
    out.add_argument("--window", type=_positive_float, default=20.0, metavar="SECONDS",
                     help="length of the --local analysis windows in seconds (default: 20)")
    out.add_argument("--hop", type=_positive_float, default=5.0, metavar="SECONDS",
                     help="hop between --local analysis windows in seconds (default: 5)")
    model = p.add_argument_group("model")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument("--model", choices=model_names(), default="default",
                        help="a model shipped with musicssl, alone or +PROFILE with a template prior "
                             "(default: skey-band+kostka-payne, see README), or a template baseline "
                             "(Krumhansl-Kessler, Temperley, Kostka-Payne)")
    choice.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="a key checkpoint: project .safetensors, released S-KEY/STONE .pt or "
                             "an .onnx from musicssl export-onnx (default: none, --model decides)")
    model.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where the network runs (default: cpu)")
    add_transpositions_argument(model)
    add_prior_argument(model)
    model.add_argument("--no-key", choices=("auto", "never"), default="auto", dest="no_key",
                       help="auto: answer 'no key' (JSON key null, no tag written) for noise, percussion "
                            "or silence, by the measurements of musicssl.key.tonality; never: always name "
                            "the most probable key (default: auto)")
    add_backend_argument(model)
    add_tuning_argument(model)
    speed = p.add_argument_group("speed")
    speed.add_argument("--jobs", "-j", type=positive_int, default=1, metavar="N",
                       help="worker processes decoding files and computing spectrograms "
                            "in parallel (default: 1)")
    speed.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                       help="files per network batch (default: 16)")
    add_ray_arguments(p)
    tags = p.add_argument_group("tags")
    tags.add_argument("--write-tags", action="store_true",
                      help="write the key into each file's tags (ID3 TKEY, Vorbis INITIALKEY, "
                           "MP4 initialkey, WMA WM/InitialKey); the audio is never touched (default: off)")
    tags.add_argument("--tag-notation", choices=NOTATIONS, default="tkey",
                      help="notation of Vorbis/MP4/WMA key tags (default: tkey, e.g. 'Ebm'); "
                           "ID3 TKEY is always the tkey form (at most 3 characters)")
    tags.add_argument("--id3-version", type=int, choices=ID3_VERSIONS, default=None, metavar="3|4",
                      help="ID3 version of MP3/WAV/AIFF tags: 3 (ID3v2.3, which car stereos, older "
                           "players and some DJ software need) or 4 (ID3v2.4) (default: the version "
                           "of the file's existing ID3 tag, 4 for a file without one)")
    tags.add_argument("--dry-run", action="store_true",
                      help="with --write-tags: report which tags would be written, change nothing (default: off)")
    p.set_defaults(func=run, _parser=p)
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


# --- records ------------------------------------------------------------------------


# --- running -------------------------------------------------------------------------

def estimator_spec(args) -> EstimatorSpec:
    """The estimator chosen by ``--model``/``--checkpoint``, ``--device`` and the model options."""
    return EstimatorSpec(args.checkpoint if args.checkpoint is not None else args.model, args.device,
                         args.transpositions, args.prior, args.backend, detect_no_key=args.no_key == "auto")


def key_options(args) -> KeyOptions:
    """What each record holds, from the output and tag options."""
    tags = (TagOptions(args.tag_notation, args.dry_run, args.id3_version) if args.write_tags else None)
    return KeyOptions(args.notation, args.local, args.window, args.hop, args.tuning, tags)


def load_key_estimator(args):
    """The estimator of :func:`estimator_spec`; its warnings become notes on stderr."""
    check_device(args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = estimator_spec(args).load()
    for warning in caught:
        print(f"musicssl key: note: {warning.message}", file=sys.stderr)
    return estimator


def run(args) -> int:
    """Estimate keys for ``args.paths``; returns the exit status."""

    fmt_name = args.format or format_from_path(args.output)
    if args.dry_run and not args.write_tags:
        return usage_error(args, "key", "--dry-run only makes sense with --write-tags")
    if args.id3_version is not None and not args.write_tags:
        return usage_error(args, "key", "--id3-version only makes sense with --write-tags")
    files = batch_inputs(args, "key")
    if files is None:
        return 2
    if args.ray is not None:
        return _run_on_ray(files, args)

    fmt = key_format(fmt_name, probabilities=args.probabilities, local=args.local, tags=args.write_tags)
    output = RecordOutput(args.output, fmt, resume=args.skip_existing)  # validates; writes nothing yet
    estimator = load_key_estimator(args)
    todo = files_to_do(files, output, args, "key")
    records = analyse_files(estimator, todo, key_options(args), jobs=args.jobs, batch_size=args.batch_size,
                            device=args.device, progress=show_progress(args, len(todo)))
    try:
        failed = write_records(records, len(todo), output, args, "key")
    except BrokenPipeError:  # e.g. `musicssl key music/ | head`: the reader has gone
        _silence_stdout()
        return 1
    if args.output is not None:
        print(f"musicssl key: {len(output.entries())} records in {args.output}", file=sys.stderr)
    return 1 if failed else 0


def _run_on_ray(files: list[str], args) -> int:
    if args.write_tags:
        return usage_error(args, "key", "--write-tags is not available with --ray")
    estimator = load_key_estimator(args)      # here too: bad options fail before the cluster starts
    options = key_options(args)
    return run_on_ray(files, feature_step(estimator, options, "cpu"),
                      functools.partial(record_step_on_worker, estimator_spec(args), options), args, "key")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's exit-time flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
