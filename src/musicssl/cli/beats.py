"""``musicssl beats PATH...``: beat times and tempo of audio files, folders and globs.

Examples::

    musicssl beats song.mp3                                      # onset strength + DBN (default)
    musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
    musicssl beats music/ -o beats.jsonl --skip-existing        # resume
    musicssl beats song.flac --activations act/ --plot plots/ --plot-window 60:90
    musicssl beats song.flac --activation zerons                 # the Zero-Note Samba model
    musicssl beats song.flac --tracker librosa                   # librosa's DP decoder

Output per file: text ``path<TAB>tempo BPM<TAB>n beats`` and an indented
line of beat times (s), or CSV / JSON / JSONL records (``beats`` as a list).
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
from pathlib import Path

import numpy as np

from musicssl.cli.common import (add_backend_argument, add_batch_arguments, add_ray_arguments, batch_inputs,
                                 check_device, files_to_do, options_of, run_on_ray, usage_error, write_batch)
from musicssl.evaluation.beat_annotations import format_beat_annotation
from musicssl.outputs import RecordFormat, RecordOutput, format_from_path

PLOT_RATE = 1000  # Hz of the waveform kept for plots


_EPILOG = """examples:
  musicssl beats song.mp3                                      (onset strength + DBN, the default)
  musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
  musicssl beats music/ -o beats.jsonl --skip-existing        (resume)
  musicssl beats song.flac --activations act/ --plot plots/ --plot-window 60:90
  musicssl beats song.flac --activation zerons                 (the Zero-Note Samba model)
  musicssl beats song.flac --tracker librosa                   (librosa's DP decoder)

Output per file: text "path<TAB>tempo BPM<TAB>n beats" and an indented line
of beat times in seconds, or CSV / JSON / JSONL records (beats as a list;
tracker names the activation and decoder, e.g. onset+dbn).
A file that cannot be analysed gives an error record and the run goes on.

exit status: 0 all files analysed, 1 some files failed, 2 usage error, 130 interrupted"""


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
    model.add_argument("--combine", choices=("max", "mean"), default="max",
                       help="with --activation zerons: how the two networks' outputs form the activation, "
                            "frame by frame (default: max)")
    model.add_argument("--min-bpm", type=float, default=55.0, metavar="BPM",
                       help="slowest tempo the DBN considers, in beats per minute (default: 55)")
    model.add_argument("--max-bpm", type=float, default=215.0, metavar="BPM",
                       help="fastest tempo the DBN considers, in beats per minute (default: 215)")
    model.add_argument("--transition-lambda", type=float, default=100.0, metavar="X",
                       help="DBN tempo-change penalty; higher keeps the tempo steadier (default: 100)")
    model.add_argument("--separator", default="hpss", metavar="NAME",
                       help="with --activation zerons: percussive/non-percussive separator, hpss or "
                            "an import path package.module:name of another (default: hpss)")
    speed = p.add_argument_group("speed")
    speed.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                       help="worker processes for decoding and the activation's front end (onset strength, "
                            "or separation and the VQT) (default: 1)")
    add_ray_arguments(p)
    p.set_defaults(func=run, _parser=p)
    return p


# --- records --------------------------------------------------------------------------

def beats_text_block(record: dict) -> str:
    """``path<TAB>tempo BPM<TAB>n beats`` and an indented line of beat times."""
    if record.get("error"):
        return f"{record['path']}\tERROR\t{record['error']}: {record.get('message', '')}"
    tempo = record.get("tempo_bpm")
    head = f"{record['path']}\t{'-' if tempo is None else f'{tempo:.1f}'} BPM\t{record['n_beats']} beats"
    times = " ".join(f"{b:.3f}" for b in record.get("beats", []))
    return head + (f"\n    {times}" if times else "")


def beats_csv_row(record: dict) -> dict:
    row = {k: record[k] for k in ("path", "tempo_bpm", "n_beats", "duration_s", "tracker", "error", "message")
           if k in record}
    if "beats" in record:
        row["beats"] = " ".join(f"{b:.3f}" for b in record["beats"])
    return row


CSV_COLUMNS = ["path", "tempo_bpm", "n_beats", "duration_s", "tracker", "beats", "error", "message"]


# --- work -------------------------------------------------------------------------------

def prepare_file(path: str, separator=None, keep_waveform: bool = False) -> dict:
    """Model-free part (picklable): decode at 16 kHz, then the onset activation
    (``separator`` None) or separation + VQT of both parts (ZeroNS)."""
    from musicssl.beat.estimator import MIN_SECONDS
    from musicssl.beat.frontend import SAMPLE_RATE, vqt_features
    from musicssl.beat.onset import onset_envelope
    from musicssl.frontend.audio import load_audio

    x = load_audio(path, sr=SAMPLE_RATE, min_duration=MIN_SECONDS)
    payload = {"duration_s": len(x) / SAMPLE_RATE}
    if separator is None:
        payload["onset"] = onset_envelope(x)
    else:
        perc, rest = separator(x, SAMPLE_RATE)
        frontend = _frontend()
        payload.update(perc=vqt_features(frontend, perc), rest=vqt_features(frontend, rest))
    if keep_waveform:
        step = SAMPLE_RATE // PLOT_RATE
        payload["waveform"] = x[: len(x) // step * step].reshape(-1, step).max(axis=1)
    return payload


@functools.lru_cache(maxsize=1)
def _frontend():
    from musicssl.beat.frontend import ZeroNSFrontEnd

    return ZeroNSFrontEnd()


def _unique_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def make_finish(estimator, args):
    used: set[str] = set()
    for folder in (args.beats_dir, args.activations, args.plot):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)

    def finish(items):
        from musicssl.outputs import atomic_write_text, beats_record

        records = []
        for path, payload in items:
            if "onset" in payload:
                act = payload["onset"]
            else:
                act = estimator.combine_outputs(*estimator.network_outputs(payload["perc"], payload["rest"]))
            result = estimator.result(act, payload["duration_s"])
            beats, tempo = result.beats, result.tempo_bpm
            record = beats_record(path, result)
            name = _unique_name(path, used) if (args.beats_dir or args.activations or args.plot) else None
            if args.beats_dir:
                target = Path(args.beats_dir) / f"{name}.beats"
                atomic_write_text(target, format_beat_annotation(beats))
                record["beats_file"] = str(target)
            if args.activations:
                target = Path(args.activations) / f"{name}.npy"
                np.save(target, act.astype(np.float32))
                record["activation_file"] = str(target)
            if args.plot:
                target = Path(args.plot) / f"{name}.png"
                plot_beats(target, payload.get("waveform"), act, beats, estimator.fps, title=Path(path).name,
                           tempo=tempo, tracker=estimator.label, window=args.plot_window)
                record["plot_file"] = str(target)
            records.append(record)
        return records
    return finish


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


def plot_beats(path: str | Path, waveform: np.ndarray | None, activation: np.ndarray,
               beats: np.ndarray, fps: float, title: str = "", tempo: float | None = None,
               tracker: str = "", window: tuple[float, float | None] | None = None) -> None:
    """PNG: waveform (top) and activation (bottom) on one time axis, beats as ticks.

    ``window`` ``(start, end)`` s limits the plot (default: the first 30 s,
    past which beat lines fill the figure); the title names the file, the
    tempo (BPM), the tracker and the window shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = len(activation) / fps
    start, end = window if window is not None else (0.0, 30.0)
    end = duration if end is None else min(end, duration)
    start = min(start, max(0.0, end - 1.0 / fps))
    beats = np.asarray(beats, dtype=np.float64)
    shown = beats[(beats >= start) & (beats <= end)]

    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1.3]})
    if waveform is not None:
        t = np.arange(len(waveform)) / PLOT_RATE
        sel = (t >= start) & (t <= end)
        axes[0].fill_between(t[sel], -waveform[sel], waveform[sel], color="0.45", linewidth=0)
    axes[0].set_ylabel("waveform")
    axes[0].set_yticks([])
    frames = np.arange(len(activation)) / fps
    sel = (frames >= start) & (frames <= end)
    axes[1].plot(frames[sel], activation[sel], color="tab:blue", linewidth=0.9, label="activation")
    axes[1].set_ylim(0, 1.1)
    axes[1].set_ylabel("activation")
    axes[1].set_xlabel("time (s)")
    axes[1].set_xlim(start, end)
    axes[0].vlines(shown, -1, 1, color="tab:red", linewidth=0.8, alpha=0.6)
    axes[1].vlines(shown, 0, 1.1, color="tab:red", linewidth=0.8, alpha=0.6, label="beats")
    axes[1].legend(loc="upper right", fontsize=8, framealpha=0.8)
    parts = [title] if title else []
    parts.append("tempo -" if tempo is None else f"{tempo:.1f} BPM")
    if tracker:
        parts.append(f"tracker {tracker}")
    parts.append(f"{start:.1f}-{end:.1f} s of {duration:.1f} s, {len(shown)} of {len(beats)} beats")
    axes[0].set_title("  |  ".join(parts), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_estimator(args):
    """``(estimator, separator or None)`` chosen by the model options."""
    from musicssl.beat.estimator import BeatEstimator, load_beat_estimator
    from musicssl.beat.separation import get_separator

    params = {}
    if args.tracker == "dbn":
        params = {"min_bpm": args.min_bpm, "max_bpm": args.max_bpm,
                  "transition_lambda": args.transition_lambda}
    zerons = args.activation == "zerons" or (args.activation is None and args.checkpoint)
    options = {}
    if zerons:
        options = {"combine": args.combine,
                   "separator": None if args.separator == "hpss" else get_separator(args.separator)}
    estimator = load_beat_estimator(args.activation, args.checkpoint, device=args.device, tracker=args.tracker,
                                    tracker_params=params, backend=args.backend, **options)
    return estimator, (estimator.separator if isinstance(estimator, BeatEstimator) else None)


def _ray_finish(options: dict):
    """``finish`` built on a Ray worker from the parsed options."""
    args = argparse.Namespace(**options)
    return make_finish(build_estimator(args)[0], args)


def run(args) -> int:
    fmt_name = args.format or format_from_path(args.output)
    files = batch_inputs(args, "beats")
    if files is None:
        return 2
    check_device(args.device)
    if args.ray is not None:
        if args.beats_dir or args.activations or args.plot:
            return usage_error(args, "beats", "--beats-dir, --activations and --plot are not available with --ray")
        estimator, separator = build_estimator(args)
        prepare = functools.partial(prepare_file, separator=separator, keep_waveform=False)
        return run_on_ray(files, prepare, functools.partial(_ray_finish, options_of(args)), args, "beats")
    fmt = RecordFormat(fmt_name, text_line=beats_text_block, csv_row=beats_csv_row, csv_columns=CSV_COLUMNS)
    output = RecordOutput(args.output, fmt, resume=args.skip_existing)
    estimator, separator = build_estimator(args)
    todo = files_to_do(files, output, args, "beats")
    prepare = functools.partial(prepare_file, separator=separator, keep_waveform=bool(args.plot))
    failed = write_batch(todo, prepare, make_finish(estimator, args), output, args, "beats",
                         jobs=max(1, args.jobs), batch_size=1)
    return 1 if failed else 0
