"""Key records: the JSON-ready dict of one result (CLI, server, Ray) and how it
looks as text and CSV (:func:`key_format`)."""

from __future__ import annotations

import functools

from musicssl.io.records import RecordFormat
from musicssl.keys import KEY_LABELS


def key_record(path: str, result, notation: str = "standard", local: bool = False) -> dict:
    """The record of one key result (a ``KeyResult`` or anything with its
    ``to_dict``): ``path`` first, all 24 probabilities, local windows and
    segments with ``local``, ``"mode_estimated": False`` for key-signature-only
    models. What ``musicssl key --format json`` prints and ``POST /v1/key`` returns."""
    record = {"path": str(path)}
    record.update(result.to_dict(notation, probabilities=True, local=local))
    record["path"] = str(path)
    if not getattr(result, "mode_estimated", True):
        record["mode_estimated"] = False
    return record


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


def _without_probabilities(row_function):
    def row(record: dict) -> dict:
        return row_function({k: v for k, v in record.items() if k != "probabilities"})
    return row


def key_format(name: str, *, probabilities: bool = False, local: bool = False, tags: bool = False) -> RecordFormat:
    """The :class:`~musicssl.io.records.RecordFormat` of key records in format ``name``:
    text blocks (with probability bars when ``probabilities``), CSV columns for the options."""
    return RecordFormat(
        name,
        text_line=functools.partial(key_text_block, probabilities=probabilities),
        csv_row=key_csv_row if probabilities else _without_probabilities(key_csv_row),
        csv_columns=key_csv_columns(probabilities, local, tags))
