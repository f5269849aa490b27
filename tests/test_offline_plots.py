"""The committed HTML template for `dvc plots`: wired up, self-contained, reproducible."""

from __future__ import annotations

import configparser
import re

import pytest

from mnist_pipeline.tools import offline_plots
from tests.conftest import REPO_ROOT

TEMPLATE = REPO_ROOT / ".dvc" / "offline_plots.html"


def test_dvc_config_points_plots_show_at_the_template():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / ".dvc" / "config")
    # DVC resolves a relative html_template against the .dvc directory.
    assert (REPO_ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE


def test_template_embeds_the_libraries_and_loads_nothing_from_the_network():
    text = TEMPLATE.read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1  # where DVC puts the charts
    assert "{scripts}" not in text  # where DVC would put its CDN <script> tags
    assert not re.search(r"<(script|link)[^>]+(src|href)\s*=", text, re.IGNORECASE)
    assert "window.vegaEmbed=" in text.replace(" ", "")  # DVC's divs call vegaEmbed(...)
    assert len(text) > 500_000  # the Vega, Vega-Lite and vega-embed code itself


def test_committed_template_is_what_the_command_builds():
    vl_convert = pytest.importorskip("vl_convert", reason="vl-convert-python (test extra)")
    if f"vl-convert-python {vl_convert.__version__}," not in TEMPLATE.read_text()[:2000]:
        pytest.skip(f"vl-convert-python {vl_convert.__version__} is not the pinned version")
    assert offline_plots.build_template() == TEMPLATE.read_text(encoding="utf-8")
