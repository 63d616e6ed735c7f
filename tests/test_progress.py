"""Progress lines (mixalign/progress.py): in a log file, whole lines at every tenth with the time left."""

import io
import re

from mixalign.progress import Progress


def test_a_log_gets_whole_lines_with_the_time_left_and_a_last_line_without():
    stream = io.StringIO()
    report = Progress("domain probes (20 steps each)", total=4, unit="trained", stream=stream)
    for _ in range(4):
        report.advance()
    report.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()  # no carriage returns piling up in a file
    assert [re.sub(r", \d+ s.*", "", line) for line in lines] == [
        f"domain probes (20 steps each): {n}/4 trained ({25 * n}%)" for n in (1, 2, 3, 4)]
    assert all(re.search(r", \d+ s, about \d+ s left$", line) for line in lines[:3])
    assert re.search(r"4/4 trained \(100%\), \d+ s$", lines[-1])


def test_no_name_reports_nothing():
    stream = io.StringIO()
    report = Progress(None, total=3, stream=stream)
    report.advance(3)
    report.close()
    assert stream.getvalue() == ""
