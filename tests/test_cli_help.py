"""Every option of every subcommand explains itself: a sentence (not the flag's
name again), its default, and no raw reStructuredText markup."""

from __future__ import annotations

import argparse
import re

import pytest

from musicssl.cli.main import SUBCOMMANDS, build_parser

COMMANDS = ["key", "beats", "train", "train-beats", "evaluate", "evaluate-beats", "calibrate"]


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_the_list_covers_every_subcommand():
    assert set(COMMANDS) <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_a_sentence_and_its_default(name):
    parser = _subparser(name)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        text = action.help or ""
        words = flag.lstrip("-").replace("-", " ")
        assert text.strip().lower() != words, f"{name} {flag}: help repeats the flag"
        assert len(text.split()) >= 4, f"{name} {flag}: {text!r} is no sentence"
        assert "default" in text or "required" in text, f"{name} {flag}: no default in {text!r}"
        assert "(default: None)" not in text and "%(default)" not in text, f"{name} {flag}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_no_raw_markup(name, capsys):
    with pytest.raises(SystemExit):
        build_parser(name).parse_args([name, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and not re.search(r"\w::", text) and "(default: None)" not in text, text


def test_top_level_help_lists_every_command_and_imports_no_heavy_stack():
    import subprocess
    import sys

    from musicssl.cli.main import SUBCOMMANDS

    code = ("import sys\nfrom musicssl.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'librosa', 'onnxruntime', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert all(name in out for name in SUBCOMMANDS)
    assert "HEAVY []" in out
