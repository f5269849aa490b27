"""For real, in a fresh git repo after a tiny pipeline run: `dvc plots show` draws every
chart in headless Chromium with the network off, and the README's experiment walkthrough
(queue a grid, run it, compare, apply the winner) works."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dvc_render.html import PAGE_HTML

from tests.conftest import REPO_ROOT
from tests.dvc_repo import command_env, commit_all, fresh_repo, run, run_stdout

pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(train_size=300, test_size=200)
    params["model"]["hidden"] = [32]
    params["train"]["epochs"] = 5
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh clone with tiny params and a small line plot, after `dvc repro`, committed."""
    repo = fresh_repo(tmp_path_factory.mktemp("report"), tiny_params(), commit=False)
    # A line chart, so the page holds every kind of template even before DVCLive's curves.
    (repo / "curve.csv").write_text("step,loss\n0,2.3\n1,1.2\n2,0.8\n3,0.6\n")
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["plots"].append({"curve.csv": {"x": "step", "y": "loss"}})
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    commit_all(repo, "fresh clone")  # as cloned: DVCLive, for one, needs a commit
    run(repo, "dvc", "repro")
    commit_all(repo, "baseline")
    return repo


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; asked for before `repo`, so a skip costs no pipeline run."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on PATH (.ci/run installs Debian's `chromium`)")


def render_offline(chromium: str, page: Path, profile: Path) -> str:
    """Load `page` in headless Chromium with all networking off; return the final DOM."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",  # needed as root (CI containers); the page is our own
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # No network: every request goes to a closed port, every host name fails.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=15000",  # let vegaEmbed's promises settle
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def drawn_charts(page_html: str, dom: str) -> dict[str, str]:
    """For each Vega chart of the page, the SVG drawn into its div ('' if none).

    DVC writes one `<div id="...">` per Vega plot, which calls `vegaEmbed('#id', spec)`;
    the divs are siblings, so a chart's DOM runs from its div to the next chart's div.
    """
    ids = re.findall(r"vegaEmbed\('#([^']+)'", page_html)
    starts = [dom.index(f'<div id="{chart}"') for chart in ids]
    ends = [*starts[1:], len(dom)]
    charts = {}
    for chart, start, end in zip(ids, starts, ends, strict=True):
        svg = re.search(r'<svg[^>]*class="marks".*?</svg>', dom[start:end], re.DOTALL)
        charts[chart] = svg.group(0) if svg else ""
    return charts


def marks(svg: str, kind: str) -> int:
    return svg.count(f'aria-roledescription="{kind}"')


def test_plots_show_draws_every_chart_offline(chromium, repo, tmp_path):
    output = run(repo, "dvc", "plots", "show")
    page = repo / "dvc_plots" / "index.html"
    assert page.as_uri() in output
    page_html = page.read_text()
    # The page is built from the committed template, not one generated for the test.
    committed = (REPO_ROOT / ".dvc" / "offline_plots.html").read_text(encoding="utf-8")
    bundle = committed.split("<script>", 1)[1].split("</script>", 1)[0]
    assert len(bundle) > 500_000
    assert bundle in page_html
    charts = drawn_charts(page_html, render_offline(chromium, page, tmp_path / "profile"))
    assert len(charts) >= 3  # confusion, per-digit accuracy, line (+ DVCLive's curves)
    for chart, svg in charts.items():
        assert svg, f"chart {chart} was not drawn"
        assert marks(svg, "axis") >= 2, chart
    confusion = charts["Confusion_matrix__test_images_"]
    assert marks(confusion, "rect mark") >= 100  # a cell for each (true, predicted) pair
    assert "true digit" in confusion
    assert "predicted digit" in confusion
    assert marks(charts["Accuracy_per_digit__test_images_"], "bar") == 10
    assert marks(charts["curve_csv"], "line mark") >= 1
    for picture in ("confusion", "mistakes", "confidence"):
        assert f"workspace_plots_pictures_{picture}.png" in page_html
        assert (page.parent / "static" / f"workspace_plots_pictures_{picture}.png").is_file()


def test_dvc_default_page_is_blank_offline(chromium, repo, tmp_path):
    """The control: DVC's own page loads Vega from a CDN, which is unreachable here."""
    default_template = tmp_path / "default.html"
    default_template.write_text(PAGE_HTML)
    run(repo, "dvc", "plots", "show", "--html-template", str(default_template), "-o", "cdn")
    page = repo / "cdn" / "index.html"
    charts = drawn_charts(page.read_text(), render_offline(chromium, page, tmp_path / "profile"))
    assert charts
    assert not any(charts.values())


def _experiments(repo: Path) -> dict[str, dict]:
    """{name: {"lr": ..., "accuracy": ...}} from `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(run_stdout(repo, "dvc", "exp", "show", "--json")):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "lr": data["params"]["params.yaml"]["data"]["train"]["lr"],
                    "accuracy": data["metrics"]["metrics/metrics.json"]["data"]["accuracy"],
                }
    return found


def start_queue(repo: Path, workers: int) -> str:
    """`dvc queue start -j N`, returning as soon as it has started the workers.

    The workers inherit the command's stdout; with a pipe, waiting for its output would
    wait for the workers to exit too. A file does not hold anyone up.
    """
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    with log.open("w") as output:
        result = subprocess.run(
            ["dvc", "queue", "start", "-j", str(workers)],
            cwd=repo,
            env=command_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    assert result.returncode == 0, log.read_text()
    return log.read_text()


def _wait_for_queue(repo: Path, names: list[str], timeout_s: float = 240) -> str:
    """Wait until the queue has run; return `dvc queue status`.

    A finished experiment is a git ref refs/exps/../<sha>/<name>; polling those is cheap,
    while each `dvc queue status` costs seconds of CPU that the queued runs need.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        refs = run(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
        if {ref.rsplit("/", 1)[-1] for ref in refs} >= set(names):
            break
        time.sleep(0.5)
    while True:
        status = run(repo, "dvc", "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_experiment_walkthrough(repo):
    queued = run(repo, "dvc", "exp", "run", "--queue", "-S", "train.lr=0.001,0.003")
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    assert len(names) == 2
    assert "Started '2'" in start_queue(repo, workers=2)
    status = _wait_for_queue(repo, names)
    for name in names:
        assert re.search(rf"^.*\b{name}\b.*\bSuccess\b", status, re.MULTILINE), status

    table = run(repo, "dvc", "exp", "show", "--only-changed")
    assert all(name in table for name in names)
    assert "train.lr" in table
    assert "accuracy" in table
    assert "train.epochs" not in table  # unchanged, so hidden by --only-changed

    first, second = names
    diff = run(repo, "dvc", "exp", "diff", first, second)
    assert "train.lr" in diff
    assert "0.001" in diff
    assert "0.003" in diff

    run(repo, "dvc", "plots", "diff", first, second, "-o", "compare")
    page = (repo / "compare" / "index.html").read_text()
    for name in names:
        assert f'"rev": "{name}"' in page  # both experiments' rows in the Vega data
        assert (repo / "compare" / "static" / f"{name}_plots_pictures_mistakes.png").is_file()

    results = _experiments(repo)
    winner = max(names, key=lambda name: results[name]["accuracy"])
    run(repo, "dvc", "exp", "apply", winner)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["train"]["lr"] == results[winner]["lr"]
    metrics = json.loads((repo / "metrics" / "metrics.json").read_text())
    assert metrics["accuracy"] == results[winner]["accuracy"]
    assert (repo / "plots" / "pictures" / "mistakes.png").is_file()
    assert "up to date" in run(repo, "dvc", "status")
