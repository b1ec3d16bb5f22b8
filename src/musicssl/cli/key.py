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

from musicssl.cli.common import (add_backend_argument, add_batch_arguments, add_prior_argument, add_ray_arguments,
                                 add_tuning_argument, options_of, run_on_ray, add_transpositions_argument, batch_inputs,
                                 check_device, files_to_do, positive_int, usage_error, write_batch)
from musicssl.key.estimator import model_names
from musicssl.keys import KEY_LABELS, NOTATIONS
from musicssl.outputs import RecordFormat, RecordOutput, format_from_path, key_record
from musicssl.tags import ID3_VERSIONS


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
                             "(default: skey-debian+kostka-payne, see README), or a template baseline "
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

def key_csv_columns(probabilities: bool, local: bool, tags: bool) -> list[str]:
    """Header of the key CSV for the chosen options."""
    columns = ["path", "key", "confidence", "duration", "tuning_cents", "no_key_reason"]
    if probabilities:
        columns += list(KEY_LABELS)
    if local:
        columns.append("segments")
    if tags:
        columns += ["tag_field", "tag_value", "tag_written", "tag_error", "tag_skipped"]
    return columns + ["error", "message"]


def key_csv_row(record: dict) -> dict:
    """Flat CSV row of a key record: one column per probability label,
    segments as ``start-end key; ...``."""
    row = {name: record[name] for name in ("path", "key", "confidence", "duration", "tuning_cents",
                                           "no_key_reason", "error", "message") if name in record}
    if record.get("no_key"):
        row["key"] = "no key"
    row.update(record.get("probabilities", {}))
    if "segments" in record:
        row["segments"] = "; ".join(f"{s['start']:g}-{s['end']:g} {s['key']}" for s in record["segments"])
    tag = record.get("tag")
    if isinstance(tag, dict):
        for name in ("field", "value", "written", "error", "skipped"):
            if name in tag:
                row[f"tag_{name}"] = tag[name]
    return row


def key_text_block(record: dict, probabilities: bool = False) -> str:
    """``path<TAB>key<TAB>confidence`` plus indented probability / segment / tag lines."""
    if record.get("error"):
        return f"{record['path']}\tERROR\t{record['error']}: {record.get('message', '')}"
    if record.get("no_key"):
        lines = [f"{record['path']}\tno key\t{record['confidence']:.3f}\t({record.get('no_key_reason', '')})"]
    else:
        lines = [f"{record['path']}\t{record['key']}\t{record['confidence']:.3f}"]
    probs = record.get("probabilities")
    if probabilities and probs:
        labels = list(probs)
        half = len(labels) // 2
        for major, minor in zip(labels[:half], labels[half:]):
            lines.append(f"    {major:<9} {probs[major]:.3f} {_bar(probs[major])}"
                         f"   {minor:<9} {probs[minor]:.3f} {_bar(probs[minor])}".rstrip())
    for segment in record.get("segments", []):
        lines.append(f"    {segment['start']:7.1f} - {segment['end']:7.1f} s  {segment['key']}")
    tag = record.get("tag")
    if isinstance(tag, dict):
        if tag.get("error") or tag.get("skipped"):
            lines.append(f"    tag not written: {tag.get('error') or tag['skipped']}")
        else:
            state = "written" if tag.get("written") else "dry run, not written"
            lines.append(f"    tag {tag['field']} = {tag['value']!r} ({state}; was {tag.get('previous')!r})")
    return "\n".join(lines)


def _bar(p: float, width: int = 12) -> str:
    """Probability as a bar of up to ``width`` characters, padded to ``width``."""
    return ("#" * int(round(p * width))).ljust(width)


# --- running -------------------------------------------------------------------------

def load_key_estimator(args):
    """The estimator chosen by ``--model``/``--checkpoint`` on ``--device``."""
    from musicssl.key.estimator import load_estimator

    check_device(args.device)
    spec = args.checkpoint if args.checkpoint is not None else args.model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator = load_estimator(spec, args.device, args.transpositions, args.prior, backend=args.backend)
    for warning in caught:
        print(f"musicssl key: note: {warning.message}", file=sys.stderr)
    estimator.detect_no_key = args.no_key == "auto"
    return estimator


def prepare_function(estimator, args, device: str):
    """The model-free, picklable ``path -> KeyFeatures`` step for ``estimator`` and the options."""
    from musicssl.key.estimator import compute_features

    return functools.partial(compute_features, frontend_config=estimator.frontend_config, device=device,
                             tuning=args.tuning, **getattr(estimator, "feature_options", {}))


def make_finish(estimator, args):
    """``finish`` for :func:`musicssl.batch.run_batch`: a batch of features → records."""
    def finish(items):
        results = estimator.estimate_features([payload for _, payload in items], local=args.local,
                                              window_s=args.window, hop_s=args.hop)
        records = []
        for (path, _), result in zip(items, results):
            record = key_record(path, result, args.notation, local=args.local)
            if args.write_tags:
                record["tag"] = ({"written": False, "skipped": "no key"} if result.no_key
                                 else _tag(path, result.key, args))
            records.append(record)
        return records
    return finish


def _tag(path: str, key, args) -> dict:
    from musicssl.tags import TagError, write_key_tag

    try:
        return write_key_tag(path, key, args.tag_notation, dry_run=args.dry_run,
                             id3_version=args.id3_version).to_dict()
    except TagError as exc:
        message = str(exc)
        return {"error": message[len(path) + 2:] if message.startswith(f"{path}: ") else message}


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

    fmt = RecordFormat(
        fmt_name,
        text_line=functools.partial(key_text_block, probabilities=args.probabilities),
        csv_row=key_csv_row if args.probabilities else _without_probabilities(key_csv_row),
        csv_columns=key_csv_columns(args.probabilities, args.local, args.write_tags))
    output = RecordOutput(args.output, fmt, resume=args.skip_existing)  # validates; writes nothing yet
    estimator = load_key_estimator(args)
    todo = files_to_do(files, output, args, "key")

    # workers compute spectrograms on the CPU; in this process the front end may use the GPU
    prepare = prepare_function(estimator, args, "cpu" if args.jobs > 1 else args.device)
    try:
        failed = write_batch(todo, prepare, make_finish(estimator, args), output, args, "key",
                             jobs=args.jobs, batch_size=args.batch_size)
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
    return run_on_ray(files, prepare_function(estimator, args, "cpu"),
                      functools.partial(_ray_finish, options_of(args)), args, "key")


def _ray_finish(options: dict):
    """``finish`` built on a Ray worker from the parsed options."""
    args = argparse.Namespace(**options)
    return make_finish(load_key_estimator(args), args)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's exit-time flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _without_probabilities(row_function):
    def row(record: dict) -> dict:
        return row_function({k: v for k, v in record.items() if k != "probabilities"})
    return row
