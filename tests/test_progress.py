"""Progress: a bar on a terminal, one plain line per stage in a log, never raw ANSI in a log."""
import io
import sys

import pytest

from tfbonemet import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_one_line_per_stage_and_no_ansi(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    lines = []
    with progress.counter("Bootstrapping", 100, lines.append, unit="resample") as advance:
        for _ in range(100):
            advance(1)
    assert lines == ["Bootstrapping (100 resamples) ..."]
    assert list(progress.stages(["float32", "int8"], "Exporting", lines.append)) == ["float32", "int8"]
    assert lines[1:] == ["Exporting: float32 ...", "Exporting: int8 ..."]
    assert sys.stderr.getvalue() == ""


@pytest.mark.parametrize("term", ["xterm", "dumb"])
def test_terminal_gets_a_bar_unless_dumb(monkeypatch, term):
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setenv("TERM", term)
    lines = []
    with progress.counter("Bootstrapping", 10, lines.append) as advance:
        for _ in range(10):
            advance(1)
    bar = sys.stderr.getvalue()
    if term == "dumb":
        assert lines == ["Bootstrapping (10 steps) ..."] and bar == ""
    else:
        assert lines == [] and "Bootstrapping" in bar and "/10" in bar and "\r" in bar


def test_counts_name_their_unit_in_plain_english(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    lines = []
    for unit, n in (("study", 2), ("study", 1), ("resample", 20), ("day", 3)):
        with progress.counter("Doing", n, lines.append, unit=unit):
            pass
    assert lines == ["Doing (2 studies) ...", "Doing (1 study) ...", "Doing (20 resamples) ...", "Doing (3 days) ..."]


def test_counting_advances_once_per_call():
    seen = []
    double = progress.counting(lambda x: 2 * x, seen.append)
    assert [double(1), double(2)] == [2, 4] and seen == [1, 1]


def test_evaluate_cli_log_has_no_ansi(tiny_run_dir, tmp_path):
    from click.testing import CliRunner

    from tfbonemet.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", str(tiny_run_dir), "--bootstrap", "20", "--output-dir",
                                      str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "\x1b[" not in result.output and "Bootstrapping 20 patient resamples" in result.output
