"""Beat records: the JSON-ready dict of one result (CLI, server, Ray) and how it
looks as text and CSV (:func:`beats_format`)."""

from __future__ import annotations

from musicssl.io.records import RecordFormat


def beats_text_block(record: dict) -> str:
    """``path<TAB>tempo BPM<TAB>n beats`` (``<TAB>M beats/bar`` when numbered) and an indented
    line of beat times, each ``time:number`` when the beats are numbered (1 = downbeat)."""
    if record.get("error"):
        return f"{record['path']}\tERROR\t{record['error']}: {record.get('message', '')}"
    tempo = record.get("tempo_bpm")
    head = f"{record['path']}\t{'-' if tempo is None else f'{tempo:.1f}'} BPM\t{record['n_beats']} beats"
    numbers = record.get("beat_numbers")
    if numbers is not None:
        head += f"\t{record['beats_per_bar']} beats/bar"
        times = " ".join(f"{b:.3f}:{k}" for b, k in zip(record.get("beats", []), numbers))
    else:
        if record.get("meter") is not None:
            head += "\tnot numbered (fewer than 3 beats, or a streamed file)"
        times = " ".join(f"{b:.3f}" for b in record.get("beats", []))
    return head + (f"\n    {times}" if times else "")


def beats_csv_row(record: dict) -> dict:
    row = {k: record[k] for k in ("path", "tempo_bpm", "n_beats", "duration_s", "tracker", "error", "message")
           if k in record}
    if "beats" in record:
        row["beats"] = " ".join(f"{b:.3f}" for b in record["beats"])
    if record.get("beat_numbers") is not None:
        row["beats_per_bar"] = record["beats_per_bar"]
        row["beat_numbers"] = " ".join(str(k) for k in record["beat_numbers"])
        row["downbeats"] = " ".join(f"{b:.3f}" for b in record["downbeats"])
    return row


CSV_COLUMNS = ["path", "tempo_bpm", "n_beats", "duration_s", "tracker", "beats", "beats_per_bar", "beat_numbers",
               "downbeats", "error", "message"]


def beats_record(path: str, result) -> dict:
    """The record of one ``BeatResult``: path, then ``result.to_dict()`` (tempo,
    beat count, duration, tracker, beat times; with beat numbering also ``meter``,
    ``beats_per_bar``, ``beat_numbers`` 1..M and ``downbeats`` times, null when not
    numbered). What ``musicssl beats
    --format json`` prints and ``POST /v1/beats`` returns."""
    return {"path": str(path), **result.to_dict()}


def beats_format(name: str) -> RecordFormat:
    """The :class:`~musicssl.io.records.RecordFormat` of beat records in format ``name``."""
    return RecordFormat(name, text_line=beats_text_block, csv_row=beats_csv_row, csv_columns=CSV_COLUMNS)
