"""coordinator/html_report.py: a self-contained page with the run's tables and plots."""

import base64
import re
from html.parser import HTMLParser

import pytest

from coordinator.cli import main
from coordinator.html_report import REPORT_HTML, render_html, verdict, write_html_report
from coordinator.plan import FleetPlan, LoadPlan, OutputPlan, Plan, TargetPlan
from coordinator.report import load_run, rerender
from tests.support.interval_reports import make_report, write_run_folder

PNG = b"\x89PNG\r\n\x1a\n"


def a_plan(**load) -> Plan:
    return Plan(
        name="html",
        target=TargetPlan(address="127.0.0.1:8001"),
        load=LoadPlan(**{"rate": 20.0, "duration_s": 3.0, "warmup_s": 1.0, **load}),
        fleet=FleetPlan(agents=2),
        thresholds=("p99 < 50ms", "error_rate < 1%"),
        outputs=OutputPlan(metrics_port=None),
    )


def reports():
    out = [make_report(a, 0, [0.2] * 5, warmup=True, target=10.0) for a in (0, 1)]
    for seq in (1, 2, 3):
        out.append(make_report(0, seq, [0.001 * seq] * 10, target=10.0))
        out.append(
            make_report(
                1, seq, [0.002] * 10, {"OK": 9, "UNAVAILABLE": 1}, target=10.0, final=seq == 3
            )
        )
    return out


class Page(HTMLParser):
    """What the page holds: images, table rows (as cell texts), anything it would fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.fetches: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("script", "link", "iframe") or "href" in attrs:
            self.fetches.append(tag)
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = write_run_folder(tmp_path_factory.mktemp("run"), a_plan(), reports())
    run = load_run(folder)
    summary, state = rerender(run)
    path = write_html_report(run, summary, state)
    page = Page()
    page.feed(path.read_text())
    return summary, page, path


def test_the_page_is_self_contained_with_four_png_figures(rendered):
    _, page, path = rendered
    assert path.name == REPORT_HTML
    assert len(page.images) == 4 and page.fetches == []
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert not re.search(r"(src|href)=[\"']?(https?:|//|file:)", path.read_text())


def test_the_summary_table_has_a_row_per_agent_and_the_total(rendered):
    summary, page, _ = rendered
    by_label = {row[0]: row for row in page.rows if row}
    total = by_label["TOTAL"]
    assert total[1:4] == [str(summary["requests"]), str(summary["errors"]), "5.00%"]
    assert total[4] == f"{summary['throughput_rps']:.1f}"
    assert total[8] == f"{summary['latency_s']['p99'] * 1e3:.3f}"  # p99 (ms)
    agents = [row for label, row in by_label.items() if re.match(r"agent \d", label)]
    assert [row[1] for row in agents] == ["30", "30"] and agents[1][2] == "3"
    assert by_label["p99 < 50ms"][2] == "PASS" and by_label["error_rate < 1%"][2] == "FAIL"
    assert by_label["UNAVAILABLE"] == ["UNAVAILABLE", "3"]


@pytest.mark.parametrize(
    ("change", "css", "words"),
    [
        ({}, "fail", "FAILED: threshold error_rate < 1% failed"),
        ({"thresholds": []}, "pass", "PASSED"),
        ({"agents_lost": 1, "thresholds": []}, "pass", "PASSED; degraded, 1 agent(s) lost"),
        ({"aborted": "p99 < 50ms failed"}, "fail", "aborted: p99 < 50ms failed"),
        ({"valid": False, "generator": {"kept_up": False}}, "invalid", "generator fell behind"),
        ({"valid": False, "requests": 0}, "invalid", "no request completed"),
    ],
)
def test_the_verdict_says_why(rendered, change, css, words):
    summary, _, _ = rendered
    got_css, got_words = verdict({**summary, **change})
    assert got_css == css and words in got_words


def test_degraded_windows_are_listed(rendered):
    summary, _, _ = rendered
    lost = {"agent": 1, "reason": "node removed", "from_unix_s": 1.8e9, "to_unix_s": None}
    page = Page()
    page.feed(render_html({**summary, "degraded": [lost]}, {}, {}))
    assert ["agent 1", "node removed", "2027-01-15 08:00:00 UTC", "the end of the run"] in page.rows


def test_text_from_the_run_is_escaped(rendered):
    summary, _, _ = rendered
    page = render_html({**summary, "run_id": "<script>x</script>", "target": "a&b"}, {}, {})
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "a&amp;b" in page


def test_cli_report_html_writes_the_page_even_with_nothing_measured(tmp_path, capsys):
    warm_only = [make_report(0, 0, [0.1], warmup=True), make_report(1, 0, [], warmup=True)]
    folder = write_run_folder(tmp_path, a_plan(), warm_only)
    assert main(["report", str(folder), "--html"]) == 3  # no request measured: invalid
    assert f"report in {folder / REPORT_HTML}" in capsys.readouterr().out
    page = Page()
    page.feed((folder / REPORT_HTML).read_text())
    assert len(page.images) == 4
