"""``musicssl beats PATH...``: beat times and tempo of audio files, folders and globs.

Examples::

    musicssl beats song.mp3                                      # onset strength + DBN (default)
    musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
    musicssl beats music/ -o beats.jsonl --skip-existing        # resume
    musicssl beats song.flac --activations act/ --plot plots/ --plot-window 60:90
    musicssl beats song.flac --activation zerons                 # the Zero-Note Samba model
    musicssl beats song.flac --tracker librosa                   # librosa's DP decoder
    musicssl beats song.flac --meter auto                        # 3 or 4 beats per bar, from the audio

Output per file: text ``path<TAB>tempo BPM<TAB>n beats<TAB>M beats/bar`` and an
indented line of beat times (s) with their number in the bar (``12.345:1``, 1 =
downbeat; ``--meter off``: times only), or CSV / JSON / JSONL records (``beats``,
``beat_numbers`` and ``downbeats`` as lists, ``beats_per_bar``).
``--beats-dir`` also writes ``<name>.beats`` files (one time per line),
``--activations`` the frame activation (62.5 frames/s) as ``<name>.npy``,
``--plot`` a PNG of waveform, activation and beats (first 30 s unless
``--plot-window``). Each record names its ``tracker`` (``onset+dbn``,
``zerons+dbn``, ...). A file that cannot be
analysed gives an error record and the run goes on.

Exit status: 0 all files analysed, 1 some failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools

from musicssl.beat.analysis import (
    BeatEstimatorSpec,
    BeatOptions,
    analyse_files,
    feature_step,
    record_step_on_worker,
)
from musicssl.beat.meter import DEFAULT_METER, parse_meter
from musicssl.beat.records import beats_format
from musicssl.cli.common import (
    add_backend_argument,
    add_batch_arguments,
    add_ray_arguments,
    batch_inputs,
    check_device,
    files_to_do,
    run_on_ray,
    show_progress,
    usage_error,
    write_records,
)
from musicssl.errors import ConfigError
from musicssl.io.records import RecordOutput, format_from_path

_EPILOG = """examples:
  musicssl beats song.mp3                                      (onset strength + DBN, the default)
  musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
  musicssl beats music/ -o beats.jsonl --skip-existing        (resume)
  musicssl beats song.flac --activations act/ --plot plots/ --plot-window 60:90
  musicssl beats song.flac --activation zerons                 (the Zero-Note Samba model)
  musicssl beats song.flac --tracker librosa                   (librosa's DP decoder)
  musicssl beats song.flac --meter auto                        (3 or 4 beats per bar, from the audio)

Output per file: text "path<TAB>tempo BPM<TAB>n beats<TAB>M beats/bar" and an
indented line of beat times in seconds with their number in the bar (12.345:1,
1 = downbeat; --meter off: times only), or CSV / JSON / JSONL records (beats,
beat_numbers, downbeats as lists, beats_per_bar; tracker names the activation
and decoder, e.g. onset+dbn).
A file that cannot be analysed gives an error record and the run goes on.

exit status: 0 all files analysed, 1 some files failed, 2 usage error, 130 interrupted"""


def parse_plot_window(text: str) -> tuple[float, float | None]:
    """``"START:END"`` seconds (either side may be empty) -> ``(start, end or None)``."""
    try:
        lo, hi = text.split(":")
        start = float(lo) if lo.strip() else 0.0
        end = float(hi) if hi.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds (e.g. 10:30 or 60:), got {text!r}")
    if start < 0 or (end is not None and end <= start):
        raise argparse.ArgumentTypeError(f"the window must satisfy 0 <= START < END, got {text!r}")
    return start, end


def add_parser(subparsers, name: str = "beats", help_text: str = "track the beats of audio files or folders"):
    """Register ``musicssl beats`` on ``subparsers``."""
    p = subparsers.add_parser(
        name, help=help_text, description="Beat times and tempo of audio files, folders and glob patterns.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    out = add_batch_arguments(p, "audio files, folders (searched recursively) or glob patterns",
                              "output format (default: from the -o extension .csv/.json/.jsonl, else text)")
    out.add_argument("--beats-dir", metavar="DIR",
                     help="also write DIR/<name>.beats, one beat time in seconds per line (default: none)")
    out.add_argument("--activations", metavar="DIR",
                     help="also save the beat activation (62.5 frames/s, values 0-1) as DIR/<name>.npy "
                          "(default: none)")
    out.add_argument("--plot", metavar="DIR",
                     help="also save a PNG of waveform, activation and beats as DIR/<name>.png (default: none)")
    out.add_argument("--plot-window", metavar="START:END", type=parse_plot_window, default=None,
                     help="the stretch of time, in seconds, that --plot shows, e.g. 60:90 or 120: "
                          "(default: 0:30)")
    model = p.add_argument_group("model and decoder")
    model.add_argument("--activation", choices=("onset", "zerons"), default=None,
                       help="beat activation: onset strength (no model; the best tracker the project has "
                            "for now) or the Zero-Note Samba networks (default: onset, or zerons with "
                            "--checkpoint)")
    model.add_argument("--checkpoint", metavar="PATH",
                       help="a ZeroNS .safetensors model (or .onnx from musicssl export-onnx); "
                            "implies --activation zerons "
                            "(default: the shipped ZeroNS model when --activation zerons)")
    model.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where the networks run (default: cpu)")
    add_backend_argument(model)
    model.add_argument("--tracker", choices=("dbn", "librosa"), default="dbn",
                       help="beat decoder: the project's DBN, or librosa's dynamic programming (default: dbn)")
    model.add_argument("--combine", choices=("max", "mean"), default=None,
                       help="with --activation zerons: how the two networks' outputs form the activation, "
                            "frame by frame (default: the model file's readout, e.g. mean for a fine-tuned "
                            "model; else max)")
    model.add_argument("--min-bpm", type=float, default=55.0, metavar="BPM",
                       help="slowest tempo the DBN considers, in beats per minute (default: 55)")
    model.add_argument("--max-bpm", type=float, default=215.0, metavar="BPM",
                       help="fastest tempo the DBN considers, in beats per minute (default: 215)")
    model.add_argument("--transition-lambda", type=float, default=100.0, metavar="X",
                       help="DBN tempo-change penalty; higher keeps the tempo steadier (default: 100)")
    model.add_argument("--separator", default="hpss", metavar="NAME",
                       help="with --activation zerons: percussive/non-percussive separator, hpss or "
                            "an import path package.module:name of another (default: hpss)")
    model.add_argument("--meter", type=_meter_choice, default=DEFAULT_METER, metavar="{auto,off,M}",
                       help="beat numbering: M beats per bar (2-16) with the downbeat phase found in the audio "
                            "(kick drums, chord changes), auto (3 or 4, also from the audio; weaker than a fixed 4 "
                            "on the project's test sets), or off (default: 4)")
    speed = p.add_argument_group("speed")
    speed.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                       help="worker processes for decoding and the activation's front end (onset strength, "
                            "or separation and the VQT) (default: 1)")
    add_ray_arguments(p)
    p.set_defaults(func=run, _parser=p)
    return p



def _meter_choice(text: str):
    """``--meter`` value: "auto", "off" (None) or a whole number of beats per bar (2-16)."""
    try:
        return parse_meter(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def estimator_spec(args) -> BeatEstimatorSpec:
    """The beat estimator chosen by the model options."""
    params = ()
    if args.tracker == "dbn":
        params = (("min_bpm", args.min_bpm), ("max_bpm", args.max_bpm),
                  ("transition_lambda", args.transition_lambda))
    zerons = args.activation == "zerons" or (args.activation is None and args.checkpoint)
    return BeatEstimatorSpec(args.activation, args.checkpoint, args.device, args.tracker, params, args.backend,
                             combine=args.combine if zerons else None,
                             separator=args.separator if zerons and args.separator != "hpss" else None,
                             meter=args.meter)


def run(args) -> int:
    fmt_name = args.format or format_from_path(args.output)
    files = batch_inputs(args, "beats")
    if files is None:
        return 2
    check_device(args.device)
    spec = estimator_spec(args)
    if args.ray is not None:
        if args.beats_dir or args.activations or args.plot:
            return usage_error(args, "beats", "--beats-dir, --activations and --plot are not available with --ray")
        estimator = spec.load()             # here too: bad options fail before the cluster starts
        return run_on_ray(files, feature_step(estimator), functools.partial(record_step_on_worker, spec),
                          args, "beats")
    output = RecordOutput(args.output, beats_format(fmt_name), resume=args.skip_existing)
    estimator = spec.load()
    todo = files_to_do(files, output, args, "beats")
    options = BeatOptions(args.beats_dir, args.activations, args.plot, args.plot_window)
    records = analyse_files(estimator, todo, options, jobs=max(1, args.jobs),
                            progress=show_progress(args, len(todo)))
    failed = write_records(records, len(todo), output, args, "beats")
    return 1 if failed else 0
