"""Progress of long jobs: log lines at most every interval plus a closing line; a bar only on a terminal."""

from __future__ import annotations

import io

from tablestore_openmemory_mcp.app.commands import ProgressBar
from tablestore_openmemory_mcp.progress import LOG_INTERVAL, LogProgress


def test_log_lines_at_most_once_per_interval_and_a_closing_line():
    now = [0.0]
    lines: list[str] = []
    progress = LogProgress("import x.zip", lines.append, clock=lambda: now[0])
    for done in range(1, 1001):
        now[0] = done / 10  # 100 s in all
        progress(done, 1000)
    progress.close()
    assert len(lines) == 11  # one per 10 s, plus the closing line
    assert lines[0] == "import x.zip: 100/1000 (10%)"
    assert lines[-1] == "import x.zip: finished, 1000/1000 (100%)"


def test_unknown_total_counts_only():
    lines: list[str] = []
    progress = LogProgress("export alice", lines.append, clock=lambda: 0.0)
    progress(7)
    progress.close()
    assert lines == ["export alice: finished, 7"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_plain_lines_elsewhere():
    terminal = Tty()
    bar = ProgressBar("reembed", total=4, stream=terminal)
    bar(4)
    bar.close()
    assert "\r" in terminal.getvalue() and "4/4" in terminal.getvalue()

    piped = io.StringIO()
    now = [0.0]
    bar = ProgressBar("reembed", total=4, stream=piped, clock=lambda: now[0])
    bar(1)
    now[0] = LOG_INTERVAL
    bar(2)
    bar.close()
    assert piped.getvalue() == "reembed: 2/4 (50%)\n"  # no \r redraws in a log; the summary goes to stdout
