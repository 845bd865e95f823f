"""The noise report's page (index.html) in a real browser: headless Chromium, driven by selenium through the
system's chromedriver, at a desktop width and a phone width.

Needs ``chromium`` and ``chromium-driver`` (Debian: ``apt-get install -y chromium chromium-driver``) and
selenium (``pip install -r requirements-test.txt``). Without them the test is skipped, saying what is
missing; under CI (``CI=true``) it fails instead. Screenshots of the whole page at both widths go to the
folder ``NPC_SCREENSHOTS`` names (else the test's temporary folder).
"""
import importlib.util
import os
from pathlib import Path

import pytest

import find_noisy_pairs
import main_CLIP
from helpers import run_args
from npc.io import atomic_write_bytes
from helpers import report_flags

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTHS = (1280, 420)


def missing_parts():
    """What the browser test lacks on this machine, each with how to install it (empty: it can run)."""
    missing = []
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package (pip install -r requirements-test.txt)")
    missing += [f"{p} (apt-get update && apt-get install -y {pkg})"
                for p, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")) if not p.is_file()]
    return missing


@pytest.fixture(scope="module")
def browser():
    missing = missing_parts()
    if missing:
        message = f"the browser test needs {'; '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report(demo_root, base_dir, tmp_path_factory):
    """The demo's report (noisy split: ground truth, candidates) with a plain CLIP run's weights (all 1)."""
    import shutil

    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "demo"
    shutil.copytree(demo_root, root)
    main_CLIP.main(run_args(root, base_dir, tmp / "logs", "--epochs", "1", "--experiments", "plain"))
    out = tmp / "report"
    find_noisy_pairs.main(report_flags(root, base_dir, out, "--top", "12", "--candidates", "6",
                                       "--run", str(tmp / "logs" / "plain")))
    return out


def layout(driver, width):
    """Load conditions of one width: a phone-like (touch, viewport meta honoured) viewport below 600 px."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})


def full_page_png(driver) -> bytes:
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    return base64.b64decode(shot["data"])


GEOMETRY = """
const rect = e => e.getBoundingClientRect();
const row = document.querySelector('table.pairs tr:not(.head)');
return {
  inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
  bodyScroll: document.body.scrollWidth,
  images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),
  svgs: Array.from(document.querySelectorAll('svg.hist')).map(s => [rect(s).left, rect(s).right, rect(s).top,
                                                                   rect(s).height]),
  cap: rect(row.querySelector('td.cap')), cands: rect(row.querySelector('td.cands')), row: rect(row),
  candWidths: Array.from(document.querySelectorAll('td.cands')).map(c => rect(c).width),
  notes: Array.from(document.querySelectorAll('p')).map(p => p.textContent),
};
"""


def test_the_report_page_fits_a_desktop_and_a_phone_screen(browser, report):
    shots = Path(os.environ.get("NPC_SCREENSHOTS") or report.parent / "screenshots")
    browser.get_log("browser")  # drop whatever an earlier page logged
    seen = {}
    for width in WIDTHS:
        layout(browser, width)
        browser.get((report / "index.html").as_uri())
        g = browser.execute_script(GEOMETRY)
        seen[width] = g
        atomic_write_bytes(shots / f"report_{width}px.png", full_page_png(browser))
        # a phone lays the page out at its own width: the viewport meta tag, and no content wider than the screen
        # (a mobile browser widens its layout to what overflows)
        assert g["inner"] == width, f"laid out {g['inner']} px wide on a {width} px screen"
        assert g["scroll"] <= g["inner"] + 1 and g["bodyScroll"] <= g["inner"] + 1, g  # no sideways scrolling
        assert len(g["images"]) == 12 + 8 and all(done and w > 0 for done, w in g["images"])  # every image decoded
        assert len(g["svgs"]) == 3  # GMM fit, p(clean), cosine; the CLIP run is one line of text
        for left, right, _, height in g["svgs"]:
            assert left >= 0 and right <= width and height > 50
        severe = [m for m in browser.get_log("browser") if m["level"] == "SEVERE"]
        assert severe == []
        assert any("run plain: clip (uniform)" in t and "no per-pair weights" in t for t in g["notes"])

    wide, phone = seen[1280], seen[420]
    # desktop: the figures side by side, the candidates a column beside the caption
    assert len({round(top) for _, _, top, _ in wide["svgs"]}) == 1
    assert abs(wide["cands"]["top"] - wide["cap"]["top"]) < 2 and wide["cands"]["left"] >= wide["cap"]["right"] - 1
    # phone: the figures stacked, each as wide as the screen allows; the candidates wrap under the row's
    # caption, as wide as the row, not squeezed into a column
    assert len({round(top) for _, _, top, _ in phone["svgs"]}) == 3
    assert all(right - left > 0.8 * 420 for left, right, _, _ in phone["svgs"])
    assert phone["cands"]["top"] >= phone["cap"]["bottom"] - 1
    assert min(phone["candWidths"]) > 0.8 * phone["row"]["width"]
