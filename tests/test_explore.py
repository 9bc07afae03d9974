"""``asyncsnn explore``: the page's data against the run's own figures, and the page in a
headless Chromium (skipped without a browser, failing in CI)."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from asyncsnn.cli import main

SMALL = ["--limit-train", "160", "--limit-test", "40", "--epochs", "1", "--hidden", "24"]
SMALL += ["--timesteps", "10", "--batch-size", "32", "-q"]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("explore")
    r = CliRunner().invoke(main, ["train", "--out", str(d / "run"), *SMALL])
    assert r.exit_code == 0, r.output
    out = d / "page.html"
    r = CliRunner().invoke(main, ["explore", str(d / "run"), "--sample", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return d / "run", out


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_and_holds_the_recorded_figures(page_file):
    from asyncsnn.explore import record_run

    run, out = page_file
    html = out.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?https?://', html)
    data = _data(html)
    assert data == json.loads(json.dumps(record_run(run, sample=3)))
    for e in data["executions"]:
        assert sum(r["t"] == 0 for r in e["rows"]) >= 1
        assert e["rows"][-1]["counts"] == e["output_counts"]
        if e["execution"] == "async":
            assert all(r["group_size"] <= e["F"] for r in e["rows"])
            per_t = [sum(r["t"] == t for r in e["rows"]) - 1 for t in range(data["timesteps"])]
            assert per_t == e["forward_steps"]


def test_bad_sample_is_a_clear_error(page_file):
    run, out = page_file
    r = CliRunner().invoke(main, ["explore", str(run), "--sample", "999", "--out", str(out)])
    assert r.exit_code != 0 and "out of range" in r.output


def _driver():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        msg = "Chromium, chromedriver or selenium not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must install them")
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_page_in_a_browser(page_file, tmp_path):
    from selenium.webdriver.common.by import By

    _, out = page_file
    data = _data(out.read_text())
    b = _driver()
    try:
        b.get(out.as_uri())
        panels = b.find_elements(By.CSS_SELECTOR, ".panel")
        assert len(panels) == len(data["executions"])
        b.find_element(By.ID, "next").click()
        assert panels[0].find_element(By.CSS_SELECTOR, ".t").text in ("0", "1")
        b.find_element(By.ID, "prev").click()
        b.find_element(By.ID, "next-t").click()
        for p, e in zip(panels, data["executions"], strict=True):
            assert p.find_element(By.CSS_SELECTOR, ".t").text == "1"
            assert p.find_element(By.CSS_SELECTOR, ".steps").text == str(e["forward_steps"][1])
        b.find_element(By.ID, "play").click()
        assert b.find_element(By.ID, "play").text == "pause"
        b.find_element(By.ID, "play").click()
        for _ in range(200):
            b.find_element(By.ID, "next").click()
        for p, e in zip(panels, data["executions"], strict=True):
            shown = [int(s.text) for s in p.find_elements(By.CSS_SELECTOR, ".counts span")]
            assert shown == e["output_counts"]
        b.find_element(By.CSS_SELECTOR, "#execution option[value='0']").click()
        assert panels[0].is_displayed() and not panels[1].is_displayed()
        shot = tmp_path / "page.png"
        b.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        b.quit()
