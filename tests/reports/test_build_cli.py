"""The page assembler, `report build`, `report writeup` and the demo driver's failure path."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from reports.build import sections_for
from reports.cli import app
from reports.demo import DemoError, Step, _run_step, demo_steps
from reports.inputs import load_inputs
from reports.page import csv_data_uri, render_page

runner = CliRunner()


def test_csv_data_uri_round_trips_the_table() -> None:
    df = pl.DataFrame({"B": [1, 4], "hist": [[1, 2], [3]], "x": [0.5, None]})
    uri = csv_data_uri(df)
    assert uri.startswith("data:text/csv;base64,")
    text = base64.b64decode(uri.split(",", 1)[1]).decode()
    assert text.splitlines() == ["B,hist,x", "1,1;2,0.5", "4,3,"]


def test_page_is_self_contained_with_toc_and_csv_per_chart(small_run: Path) -> None:
    sections = sections_for(load_inputs([small_run]))
    html = render_page("t", sections, ["a.parquet"])
    charts = [c for s in sections for c in s.charts]
    assert len(charts) == 13
    figures = [c for c in charts if c.figure is not None]
    assert [c.key for c in charts if c.figure is None] == ["memory-verified"]
    assert "<td>4096</td>" in html  # the verify table is shown inline
    assert html.count('<script type="text/javascript">') == 1  # plotly.js inlined once
    assert not re.search(r"<script[^>]+src=", html)  # nothing fetched from outside
    for c in charts:
        assert f'href="#{c.key}"' in html and f'id="{c.key}"' in html
        assert f'download="{c.key}.csv"' in html
    assert html.count('class="plotly-graph-div"') == len(figures)


def test_build_writes_report_and_refuses_to_overwrite(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["build", str(small_run), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert '"charts"' in res.output and out.stat().st_size > 1_000_000  # plotly.js inside
    res = runner.invoke(app, ["build", str(small_run), "--out", str(out)])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["build", str(small_run), "--out", str(out), "--force"])
    assert res.exit_code == 0


def test_build_bad_inputs_exit_2_without_output(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["build", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code == 2 and "no such file" in res.output and not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["build", str(empty), "--out", str(out)])
    assert res.exit_code == 2 and "no result files" in res.output and not out.exists()
    # a file that claims moe-results/1 but lacks its columns
    pl.DataFrame({"x": [1]}).write_parquet(
        empty / "bad.parquet", metadata={"deltasim.format": "moe-results/1"}
    )
    res = runner.invoke(app, ["build", str(empty), "--out", str(out)])
    assert res.exit_code == 2 and "experiment" in res.output and not out.exists()
    assert "Traceback" not in res.output


def test_writeup_answers_every_question_from_the_files(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    res = runner.invoke(app, ["writeup", str(small_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    headings = re.findall(r"^## (\d)\. ", text, flags=re.M)
    assert headings == [str(i) for i in range(1, 9)]
    assert "**Conclusion.**" in text and text.count("**Conclusion.**") == 8
    assert "| 1 | 62.00 | 2.83 | 2 |" in text  # accuracy at k=1: mean, std over 2 seeds
    assert "3 of 4 (point, metric) pairs are within tolerance" in text
    assert "more experts per sample help" in text  # 0.74-0.05 > 0.62+0.05
    assert "report.html#moe-accuracy-k" in text
    # predicted vs measured: the Inductor row is judged on the prediction with the wrapper's
    # reuse folded in (exact here), the plain graph/1 error (25 %) is shown beside it
    assert "| inductor | 1 | 0.000 | 0.000 | 25.000 | 1 |" in text
    assert "fx level worst 0.05 %; inductor level worst 0.00 %" in text


def _writeups_of_saved_checks(
    run: Path, tmp_path: Path, variants: dict[str, Any]
) -> dict[str, str]:
    """``report writeup`` of ``run`` once per variant, its saved ``sim check --json`` lines
    rewritten by the variant (a function of a line's index and dict) each time."""
    check = run / "simcheck.jsonl"
    lines = [json.loads(x) for x in check.read_text().splitlines()]
    texts = {}
    for name, rewrite in variants.items():
        check.write_text("".join(json.dumps(rewrite(i, x)) + "\n" for i, x in enumerate(lines)))
        out = tmp_path / f"results-{name}.md"
        res = runner.invoke(app, ["writeup", str(run), "--out", str(out)])
        assert res.exit_code == 0, res.output
        texts[name] = out.read_text()
    return texts


def test_writeup_cautions_when_the_checks_profile_was_measured_on_a_moving_machine(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,  # steady, moving, unrecorded (older outputs)
        {str(v): (lambda _i, x, v=v: {**x, "profile_variation": v}) for v in (0.02, 0.4, None)},
    )
    assert "varied by 40% between hw profile's passes" in texts["0.4"]
    assert "Caveat" not in texts["0.02"] and "Caveat" not in texts["None"]
    # the caveat adds to the fidelity conclusion, it does not replace it
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["0.4"]


def test_writeup_says_when_the_model_took_the_runs_state_from_the_probes(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "probed": lambda i, x: {**x, "speed_factor": (0.91, 1.37)[i % 2]},
            "plain": lambda _i, x: {**x, "speed_factor": None},
            "older": lambda _i, x: {k: v for k, v in x.items() if k != "speed_factor"},
        },
    )
    assert "idled ×0.91–×1.37 as slowly as while profiled" in texts["probed"]
    assert "speed probe" not in texts["plain"] and "speed probe" not in texts["older"]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["probed"]


def test_writeup_says_when_the_model_took_the_hosts_speed_from_the_run(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "run": lambda i, x: {**x, "run_speed": (0.84, 1.12)[i % 2], "speed_factor": None},
            "both": lambda i, x: {**x, "run_speed": (0.9, None)[i % 2], "speed_factor": 1.2},
            "plain": lambda _i, x: {**x, "run_speed": None, "speed_factor": None},
            "older": lambda _i, x: {k: v for k, v in x.items() if k != "run_speed"},
        },
    )
    assert "gates that ran alone: ×0.84–×1.12 the profile's" in texts["run"]
    assert "speed probe" not in texts["run"]
    assert "gates that ran alone: ×0.90 the profile's" in texts["both"]
    assert "Elsewhere it took each run's machine state from the host speed probe" in texts["both"]
    for name in ("plain", "older"):
        assert "gates that ran alone" not in texts[name]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["run"]


def test_writeup_says_when_the_model_read_the_machines_state_from_the_run(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "run": lambda i, x: {**x, "run_speed": 0.9, "state_from_run": (True, False)[i % 2]},
            "profile": lambda _i, x: {**x, "state_from_run": False},
            "older": lambda _i, x: {k: v for k, v in x.items() if k != "state_from_run"},
            "malformed": lambda _i, x: {**x, "state_from_run": "yes"},
        },
    )
    assert "gates that ran alone: ×0.90 the profile's" in texts["run"]
    assert "It read how the host's speed moved within each run" in texts["run"]
    for name in ("profile", "older", "malformed"):
        assert "moved within each run" not in texts[name]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["run"]


def test_writeup_says_when_the_model_read_the_expert_calls_the_workers_join_and_stalls(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "both": lambda i, x: {
                **x,
                "run_speed": 0.9,
                "run_expert_factor": (1.1, 1.3)[i % 2],
                "run_combine_factor": (1.2, 1.25)[i % 2],
                "run_handoff_factor": (0.6, 0.7)[i % 2],
                "worker_join": True,
                "stalls": True,
                "run_stalls_hz": None,
            },
            "calm_run": lambda _i, x: {**x, "stalls": False, "run_stalls_hz": 0.0},
            "from_run": lambda i, x: {
                **x,
                "stalls": i % 2 == 0,
                "run_stalls_hz": (0.5, 0.0)[i % 2],
            },
            "neither": lambda _i, x: {
                **x,
                "run_expert_factor": None,
                "run_combine_factor": None,
                "run_handoff_factor": None,
                "worker_join": False,
                "stalls": False,
                "run_stalls_hz": None,
            },
            "older": lambda _i, x: {
                k: v
                for k, v in x.items()
                if k
                not in (
                    "run_expert_factor",
                    "run_combine_factor",
                    "run_handoff_factor",
                    "worker_join",
                    "stalls",
                    "run_stalls_hz",
                )
            },
            "malformed": lambda _i, x: {
                **x,
                "run_expert_factor": "x",
                "run_combine_factor": "x",
                "run_handoff_factor": "x",
                "worker_join": "yes",
                "stalls": "yes",
                "run_stalls_hz": "often",
            },
        },
    )
    assert "calls with no gate running: ×1.10–×1.30 the profile's" in texts["both"]
    assert "combines with no gate running: ×1.20–×1.25 the profile's" in " ".join(
        texts["both"].split()
    )
    assert "to the batch it formed: ×0.60–×0.70 the profile's" in " ".join(texts["both"].split())
    assert "run during the next gate" in texts["both"]
    assert "ran the machine's stalls" in texts["both"]
    assert "in each run's own gates and found none" in " ".join(texts["calm_run"].split())
    assert "replayed the machine's stalls" not in texts["calm_run"]
    assert "replayed the machine's stalls" not in texts["both"]
    assert "that each run's own gates showed, where they were: 0.00–0.50 per second" in " ".join(
        texts["from_run"].split()
    )
    for name in ("neither", "older", "malformed"):
        assert "no gate running" not in texts[name] and "next gate" not in texts[name]
        assert "the batch it formed" not in texts[name]
        assert "stalls" not in texts[name]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["both"]


def test_writeup_says_when_predictions_are_the_mean_of_several_profiles(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "three": lambda _i, x: {**x, "profiles": 3},
            "one": lambda _i, x: {**x, "profiles": 1},
            "older": lambda _i, x: {k: v for k, v in x.items() if k != "profiles"},
            "malformed": lambda _i, x: {**x, "profiles": "3"},
        },
    )
    assert "(up to 3), each run was predicted as the mean" in texts["three"]
    for name in ("one", "older", "malformed"):
        assert "mean of every profile" not in texts[name]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["three"]


def test_writeup_says_when_the_host_models_lock_was_won_whole(
    small_run: Path, tmp_path: Path
) -> None:
    texts = _writeups_of_saved_checks(
        small_run,
        tmp_path,
        {
            "whole": lambda i, x: {**x, "host_lock": ("whole", "even")[i % 2]},
            "even": lambda _i, x: {**x, "host_lock": "even"},
            "ideal": lambda _i, x: {**x, "host_lock": None},
            "older": lambda _i, x: {k: v for k, v in x.items() if k != "host_lock"},
            "malformed": lambda _i, x: {**x, "host_lock": "WHOLE!"},
        },
    )
    assert "let the interpreter lock be won or lost whole" in texts["whole"]
    for name in ("even", "ideal", "older", "malformed"):
        assert "won or lost whole" not in texts[name]
    assert "3 of 4 (point, metric) pairs are within tolerance" in texts["whole"]


def test_demo_covers_every_tool_in_order(tmp_path: Path) -> None:
    steps = demo_steps(tmp_path)
    verbs = [(Path(s.argv[0]).name, s.argv[1]) for s in steps]
    for needed in [("hw", "profile"), ("hw", "moe"), ("sim", "run"), ("hw", "serve"),
                   ("sim", "check"), ("hw", "capture"), ("sched", "compare"),
                   ("sched", "order"), ("hw", "verify"), ("hw", "memstudy"),
                   ("report", "build")]:  # fmt: skip
        assert needed in verbs
    assert verbs.index(("hw", "serve")) < verbs.index(("sim", "check"))
    assert verbs.index(("sched", "order")) < verbs.index(("hw", "verify"))
    assert verbs[-2] == ("report", "build")


def test_demo_step_failure_names_step_and_log(tmp_path: Path) -> None:
    step = Step(
        "explode", [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    )
    log = tmp_path / "logs" / "x.log"
    with pytest.raises(DemoError, match=r"(?s)'explode' failed \(exit 3\).*boom"):
        _run_step(step, log)
    saved = tmp_path / "out.jsonl"
    ok = Step("ok", [sys.executable, "-c", "print('{\"a\": 1}')"], stdout_to=saved)
    _run_step(ok, log)
    assert saved.read_text() == '{"a": 1}\n'


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep")
    res = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--force" in res.output
    assert (tmp_path / "x").read_text() == "keep"


def test_reports_import_no_computing_package() -> None:
    import subprocess

    code = (
        "import sys, reports.cli, reports.build, reports.demo, reports.writeup; "
        "bad = [m for m in ('torch', 'sim', 'scheduler', 'hw') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's first command, minus the install: every tool, then the report (minutes)."""
    from reports.demo import run_demo

    report = run_demo(tmp_path / "demo")
    assert report.is_file() and report.stat().st_size > 1_000_000
    inp = load_inputs([tmp_path / "demo"])
    assert inp.moe_results is not None and inp.simcheck is not None and inp.verify is not None
    assert {r.source for r in inp.serve} == {"simulated", "measured"}
    assert inp.compare is not None and inp.memstudy is not None
    assert (tmp_path / "demo" / "results.md").read_text().count("**Conclusion.**") == 8


def test_the_orders_conclusion_lists_tied_methods_by_name() -> None:
    """Methods tied on the count at the bound, or on the worst gap, come in name order, so
    that regenerating the write-up from the same files gives the same text."""
    from reports.inputs import Inputs
    from reports.writeup import _orders

    rows = [
        {"graph": g, "method": m, "peak_bytes": peak, "optimal": False,
         "lower_bound_bytes": 100, "best_lower_bound_bytes": 100, "seconds": 0.1}
        for g in ("a", "b")
        for m, peak in (("sp", 100), ("ilp", 100), ("best", 100), ("lpmf", 125), ("bfs", 125))
    ]  # fmt: skip
    for order in (rows, rows[::-1]):
        inp = Inputs(compare=pl.DataFrame(order))
        text = _orders(inp, "report.html")
        assert "bound: best 2/2, ilp 2/2, sp 2/2, bfs 0/2, lpmf 0/2." in text
        assert "method: best 0.0 %, ilp 0.0 %, sp 0.0 %, bfs 20.0 %, lpmf 20.0 %." in text
