"""Beat records: the JSON-ready dict of one result (CLI, server, Ray) and how it
looks as text and CSV (:func:`beats_format`)."""

from __future__ import annotations

from musicssl.io.records import RecordFormat


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


def beats_record(path: str, result) -> dict:
    """The record of one ``BeatResult``: path, then ``result.to_dict()`` (tempo,
    beat count, duration, tracker, beat times). What ``musicssl beats
    --format json`` prints and ``POST /v1/beats`` returns."""
    return {"path": str(path), **result.to_dict()}


def beats_format(name: str) -> RecordFormat:
    """The :class:`~musicssl.io.records.RecordFormat` of beat records in format ``name``."""
    return RecordFormat(name, text_line=beats_text_block, csv_row=beats_csv_row, csv_columns=CSV_COLUMNS)
