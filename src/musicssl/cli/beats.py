"""``musicssl beats PATH...``: beat times and tempo of audio files, folders and globs.

Examples::

    musicssl beats song.mp3
    musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
    musicssl beats music/ -o beats.jsonl --skip-existing        # resume
    musicssl beats song.flac --activations act/ --plot plots/
    musicssl beats song.flac --tracker librosa

Output per file: text ``path<TAB>tempo BPM<TAB>n beats`` and an indented
line of beat times (s), or CSV / JSON / JSONL records (``beats`` as a list).
``--beats-dir`` also writes ``<name>.beats`` files (one time per line),
``--activations`` the frame activation (62.5 frames/s) as ``<name>.npy``,
``--plot`` a PNG of waveform, activation and beats. A file that cannot be
analysed gives an error record and the run goes on.

Exit status: 0 all files analysed, 1 some failed, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from musicssl.cli.common import add_batch_arguments, batch_inputs, check_device, files_to_do, write_batch
from musicssl.evaluation.beat_annotations import format_beat_annotation
from musicssl.outputs import RecordFormat, RecordOutput, format_from_path

PLOT_RATE = 1000  # Hz of the waveform kept for plots


_EPILOG = """examples:
  musicssl beats song.mp3
  musicssl beats music/ --format jsonl -o beats.jsonl --beats-dir beats/ --jobs 2
  musicssl beats music/ -o beats.jsonl --skip-existing        (resume)
  musicssl beats song.flac --activations act/ --plot plots/
  musicssl beats song.flac --tracker librosa

Output per file: text "path<TAB>tempo BPM<TAB>n beats" and an indented line
of beat times in seconds, or CSV / JSON / JSONL records (beats as a list).
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
    model = p.add_argument_group("model and decoder")
    model.add_argument("--checkpoint", metavar="PATH",
                       help="a ZeroNS .safetensors model (default: the shipped model)")
    model.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where the networks run (default: cpu)")
    model.add_argument("--tracker", choices=("dbn", "librosa"), default="dbn",
                       help="beat decoder: the project's DBN, or librosa's dynamic programming (default: dbn)")
    model.add_argument("--combine", choices=("max", "mean"), default="max",
                       help="how the two networks' outputs form the activation, frame by frame (default: max)")
    model.add_argument("--min-bpm", type=float, default=55.0, metavar="BPM",
                       help="slowest tempo the DBN considers, in beats per minute (default: 55)")
    model.add_argument("--max-bpm", type=float, default=215.0, metavar="BPM",
                       help="fastest tempo the DBN considers, in beats per minute (default: 215)")
    model.add_argument("--transition-lambda", type=float, default=100.0, metavar="X",
                       help="DBN tempo-change penalty; higher keeps the tempo steadier (default: 100)")
    model.add_argument("--separator", default="hpss", metavar="NAME",
                       help="percussive/non-percussive separator: hpss or an import path "
                            "package.module:name of another (default: hpss)")
    speed = p.add_argument_group("speed")
    speed.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                       help="worker processes for decoding, separation and the VQT (default: 1)")
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

def prepare_file(path: str, separator, keep_waveform: bool = False) -> dict:
    """Model-free part (picklable): decode at 16 kHz, separate, VQT both parts."""
    from musicssl.beat.estimator import MIN_SECONDS
    from musicssl.beat.frontend import SAMPLE_RATE, vqt_features
    from musicssl.frontend.audio import load_audio

    x = load_audio(path, sr=SAMPLE_RATE, min_duration=MIN_SECONDS)
    perc, rest = separator(x, SAMPLE_RATE)
    frontend = _frontend()
    payload = {"perc": vqt_features(frontend, perc), "rest": vqt_features(frontend, rest),
               "duration_s": len(x) / SAMPLE_RATE}
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
        from musicssl.outputs import atomic_write_text

        records = []
        for path, payload in items:
            p, a = estimator.network_outputs(payload["perc"], payload["rest"])
            act = estimator.combine_outputs(p, a)
            beats, tempo = estimator.decode(act)
            record = {"path": path, "tempo_bpm": None if tempo is None else round(float(tempo), 2),
                      "n_beats": int(len(beats)), "duration_s": round(payload["duration_s"], 3),
                      "tracker": estimator.tracker, "beats": [round(float(b), 4) for b in beats]}
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
                plot_beats(target, payload.get("waveform"), act, beats, estimator.fps, title=Path(path).name)
                record["plot_file"] = str(target)
            records.append(record)
        return records
    return finish


def plot_beats(path: str | Path, waveform: np.ndarray | None, activation: np.ndarray,
               beats: np.ndarray, fps: float, title: str = "") -> None:
    """PNG: waveform (top) and activation (bottom) with beats as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True)
    if waveform is not None:
        t = np.arange(len(waveform)) / PLOT_RATE
        axes[0].fill_between(t, -waveform, waveform, color="0.4", linewidth=0)
    axes[0].set_ylabel("waveform")
    axes[1].plot(np.arange(len(activation)) / fps, activation, color="tab:blue", linewidth=0.8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("activation")
    axes[1].set_xlabel("time (s)")
    for ax in axes:
        for b in beats:
            ax.axvline(b, color="tab:red", linewidth=0.6, alpha=0.7)
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args) -> int:
    from musicssl.beat.estimator import BeatEstimator
    from musicssl.beat.separation import get_separator

    fmt_name = args.format or format_from_path(args.output)
    files = batch_inputs(args, "beats")
    if files is None:
        return 2
    check_device(args.device)
    fmt = RecordFormat(fmt_name, text_line=beats_text_block, csv_row=beats_csv_row, csv_columns=CSV_COLUMNS)
    output = RecordOutput(args.output, fmt, resume=args.skip_existing)
    params = {}
    if args.tracker == "dbn":
        params = {"min_bpm": args.min_bpm, "max_bpm": args.max_bpm,
                  "transition_lambda": args.transition_lambda}
    separator = None if args.separator == "hpss" else get_separator(args.separator)
    estimator = BeatEstimator.from_checkpoint(args.checkpoint, device=args.device, combine=args.combine,
                                              tracker=args.tracker, tracker_params=params,
                                              separator=separator)
    todo = files_to_do(files, output, args, "beats")
    prepare = functools.partial(prepare_file, separator=estimator.separator, keep_waveform=bool(args.plot))
    failed = write_batch(todo, prepare, make_finish(estimator, args), output, args, "beats",
                         jobs=max(1, args.jobs), batch_size=1)
    return 1 if failed else 0
