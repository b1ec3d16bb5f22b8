"""The shared many-file runner (musicssl.runner) and record outputs (musicssl.io.records)."""

from __future__ import annotations

import json
import os

import pytest

from musicssl.runner import run_batch, WorkerCrashedError
from musicssl.io.files import expand_inputs
from musicssl.errors import AudioDecodeError, ConfigError
from musicssl.io.records import error_record, JOURNAL_SUFFIX, read_entries, RecordFormat, RecordOutput
from musicssl.io.atomic import atomic_write_text


# --- module-level functions: picklable for worker processes ---------------------

def length_of_name(path: str) -> int:
    """A stand-in for decoding: fails on names containing 'bad'."""
    if "bad" in os.path.basename(path):
        raise AudioDecodeError("not audio", path)
    return len(os.path.basename(path))


def record_for(path: str) -> dict:
    return {"path": path, "n": length_of_name(path)}


def crash_on_boom(path: str) -> int:
    """Kills its worker process for 'boom' files, like a decoder segfault would."""
    if "boom" in path:
        os._exit(3)
    return len(path)


def names(paths):
    return [os.path.basename(p) for p in paths]


# --- inputs -----------------------------------------------------------------------

def test_expand_inputs_folders_globs_and_explicit_files(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ["a/x.wav", "a/deep/y.FLAC", "a/notes.txt", "a/.hidden.wav", "z.mp3"]:
        (tmp_path / name).write_bytes(b"")
    found = expand_inputs([tmp_path / "a"])
    assert sorted(names(found)) == ["x.wav", "y.FLAC"]  # recursive, audio only, hidden skipped
    assert names(expand_inputs([str(tmp_path / "**" / "*.wav")])) == ["x.wav"]
    # explicit arguments are kept even when missing or not audio (they get error records)
    kept = expand_inputs([tmp_path / "a" / "notes.txt", tmp_path / "missing.wav"])
    assert names(kept) == ["notes.txt", "missing.wav"]
    # duplicates (same file twice, folder + file) appear once
    both = expand_inputs([tmp_path / "z.mp3", str(tmp_path / "z.mp3"), tmp_path])
    assert names(both).count("z.mp3") == 1 and len(both) == 3
    assert expand_inputs([str(tmp_path / "nothing*.wav")]) == []


# --- running ----------------------------------------------------------------------

def test_run_batch_records_in_order_with_error_records():
    paths = ["one.wav", "bad.wav", "three.wav"]
    records = list(run_batch(paths, record_for))
    assert [r["path"] for r in records] == paths
    assert records[0] == {"path": "one.wav", "n": 7}
    assert records[1]["error"] == "AudioDecodeError" and records[1]["message"] == "not audio"


def test_finish_gets_batches_and_a_failing_batch_is_retried_file_by_file():
    calls = []

    def finish(items):
        calls.append([p for p, _ in items])
        if any(n == 9 for _, n in items):  # 'nine9.wav' (9 characters) cannot be finished
            raise ValueError("model failed")
        return [{"n2": n * 2} for _, n in items]

    paths = ["a.wav", "bb.wav", "bad.wav", "nine9.wav", "ccc.wav"]
    records = list(run_batch(paths, length_of_name, finish, batch_size=2))
    assert [r["path"] for r in records] == paths
    assert records[0] == {"n2": 10, "path": "a.wav"}
    assert records[2]["error"] == "AudioDecodeError"
    assert records[3] == {"path": "nine9.wav", "error": "ValueError", "message": "model failed"}
    assert records[4]["n2"] == 14
    assert calls[0] == ["a.wav", "bb.wav"]  # a batch of 2 prepared files
    assert ["nine9.wav"] in calls  # retried alone after its batch failed


def test_slow_files_are_finished_one_by_one_and_fast_ones_in_batches():
    """Progress and the journal advance per file: a record does not wait for its batch
    to fill while the next slow file is prepared."""
    import time

    events = []

    def slow(path):
        events.append(("prepare", path))
        time.sleep(0.25)
        return len(path)

    def finish(items):
        return [{"n": n} for _, n in items]

    paths = [f"f{i}.wav" for i in range(4)]
    for record in run_batch(paths, slow, finish, batch_size=16, max_wait_s=0.1):
        events.append(("record", record["path"]))
    assert events == [e for p in paths for e in (("prepare", p), ("record", p))]
    sizes = []
    fast = list(run_batch(paths * 3, len, lambda items: sizes.append(len(items)) or [{} for _ in items],
                          batch_size=4, max_wait_s=60.0))
    assert len(fast) == 12 and sizes == [4, 4, 4]


def test_parallel_workers_give_the_same_records():
    paths = [f"file{i}.wav" for i in range(7)] + ["bad.wav"]
    serial = list(run_batch(paths, record_for, jobs=1))
    parallel = list(run_batch(paths, length_of_name, lambda items: [{"n": n} for _, n in items],
                              jobs=2, batch_size=3))
    assert [r["path"] for r in parallel] == paths
    assert parallel[:-1] == serial[:-1]
    assert parallel[-1]["error"] == "AudioDecodeError"


def test_a_crashing_worker_only_fails_its_own_file():
    paths = ["a.wav", "boom.wav", "cc.wav", "ddd.wav"]
    records = list(run_batch(paths, crash_on_boom, jobs=2))
    assert [r["path"] for r in records] == paths
    assert records[1]["error"] == WorkerCrashedError.__name__
    assert [r.get("result") for r in records if r["path"] != "boom.wav"] == [5, 6, 7]


def test_keyboard_interrupt_stops_the_run():
    def finish(items):
        if items[0][0] == "c.wav":
            raise KeyboardInterrupt
        return [{} for _ in items]

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for record in run_batch(["a.wav", "b.wav", "c.wav", "d.wav"], length_of_name, finish, batch_size=1):
            seen.append(record["path"])
    assert seen == ["a.wav", "b.wav"]


# --- outputs ----------------------------------------------------------------------

def test_error_record_drops_the_path_prefix():
    record = error_record("x.wav", AudioDecodeError("cannot decode", "x.wav"))
    assert record == {"path": "x.wav", "error": "AudioDecodeError", "message": "cannot decode"}


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind
    monkeypatch.undo()
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "text"])
def test_killed_run_resumes_from_the_journal(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    form = RecordFormat(fmt)
    first = RecordOutput(out, form)
    first.write({"path": "a.wav", "n": 1})
    first.write({"path": "b.wav", "error": "AudioDecodeError", "message": "bad"})
    # the process dies here: no close(); the journal has both records, fsynced
    assert (tmp_path / (out.name + JOURNAL_SUFFIX)).exists()
    with open(tmp_path / (out.name + JOURNAL_SUFFIX), "a") as journal:
        journal.write('{"path": "c.wav", "n"')  # a record cut off mid-write
    del first

    second = RecordOutput(out, form, resume=True)
    assert second.done() == {os.path.abspath("a.wav")}  # the failed file is tried again
    with second:
        second.write({"path": "b.wav", "n": 2})
        second.write({"path": "c.wav", "n": 3})
    assert not (tmp_path / (out.name + JOURNAL_SUFFIX)).exists()
    entries = read_entries(out, fmt)
    assert [e.path for e in entries] == ["a.wav", "b.wav", "c.wav"]
    assert all(e.ok for e in entries)


def test_resume_keeps_rows_of_an_existing_csv_and_rewrites_it_whole(tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("path,n,error,message\nold.wav,5,,\nfailed.wav,,AudioDecodeError,bad\n")
    output = RecordOutput(out, RecordFormat("csv"), resume=True)
    assert output.done() == {os.path.abspath("old.wav")}
    with output:
        output.write({"path": "failed.wav", "n": 7})
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[:2] == ["path", "n"]
    assert lines[1].startswith("old.wav,5") and lines[2].startswith("failed.wav,7")
    assert len(lines) == 3


def test_resume_refuses_a_file_it_cannot_read(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("this is not json")
    with pytest.raises(ConfigError, match="cannot resume"):
        RecordOutput(out, RecordFormat("json"), resume=True)
    assert out.read_text() == "this is not json"


def test_resume_needs_a_file():
    with pytest.raises(ConfigError, match="-o"):
        RecordOutput(None, RecordFormat("jsonl"), resume=True)


def test_stdout_streams_csv_with_a_fixed_header():
    import io

    stream = io.StringIO()
    output = RecordOutput(None, RecordFormat("csv", csv_columns=["path", "n", "error", "message"]), stream=stream)
    with output:
        output.write({"path": "bad.wav", "error": "AudioDecodeError", "message": "bad"})
        output.write({"path": "ok.wav", "n": 3})
    assert stream.getvalue().splitlines() == [
        "path,n,error,message", "bad.wav,,AudioDecodeError,bad", "ok.wav,3,,"]


def test_json_document_is_a_list_of_records(tmp_path):
    out = tmp_path / "o.json"
    with RecordOutput(out, RecordFormat("json")) as output:
        output.write({"path": "a.wav", "p": {"x": 1}})
    assert json.loads(out.read_text()) == [{"path": "a.wav", "p": {"x": 1}}]


def test_ctrl_c_during_the_final_write_does_not_cut_it_short(tmp_path, monkeypatch):
    import signal

    import musicssl.io.records as outputs

    out = tmp_path / "o.jsonl"
    real_write = outputs.atomic_write_text

    def write_interrupted(path, text):
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the write
        real_write(path, text)

    monkeypatch.setattr(outputs, "atomic_write_text", write_interrupted)
    output = RecordOutput(out, RecordFormat("jsonl"))
    with pytest.raises(KeyboardInterrupt):
        with output:
            output.write({"path": "a.wav", "n": 1})
    assert json.loads(out.read_text()) == {"path": "a.wav", "n": 1}
    assert not (tmp_path / ("o.jsonl" + JOURNAL_SUFFIX)).exists()
