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
def downloads(tmp_path_factory):
    """The folder the browser downloads into."""
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
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
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
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
  decide: Array.from(document.querySelectorAll('tr.pr button.d')).filter((b, k) => k % 3 == 0)
    .map(b => [rect(b).width, rect(b).height]),
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
        assert len(g["decide"]) == 12 + 8 and all(w > 40 and h > 15 for w, h in g["decide"])  # every row's choices
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


ROW_STATES = """
return {
  count: document.getElementById('dec-count').textContent,
  rows: Array.from(document.querySelectorAll('tr.pr')).map(tr => [Number(tr.dataset.pair), tr.dataset.decision || '',
                                                                  tr.offsetParent !== null]),
  current: Array.from(document.querySelectorAll('tr.pr')).findIndex(tr => tr.classList.contains('cur')),
};
"""


def wait_for(what, seconds=15.0):
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s in vain for {what.__doc__ or what}")


def test_decisions_made_with_the_keyboard_survive_a_reload_and_download_with_their_keys(browser, report, downloads):
    import csv
    import json

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from npc.pair_weights import load_pair_weights

    summary = json.loads((report / "report.json").read_text(encoding="utf-8"))
    with open(report / "pairs.csv", newline="", encoding="utf-8") as f:
        by_pair = {int(r["pair"]): r for r in csv.DictReader(f)}
    layout(browser, 1280)
    browser.get((report / "index.html").as_uri())
    browser.execute_script("window.localStorage.clear()")
    browser.refresh()
    state = browser.execute_script(ROW_STATES)
    assert state["count"].startswith("0 of 20 pairs decided") and state["current"] == -1
    pairs = [p for p, _, _ in state["rows"]]
    assert pairs == [r["pair"] for r in summary["shown"]["rows"]]  # the page's rows are report.json's, in order

    # typing in a field of the page decides nothing
    browser.execute_script("const i = document.createElement('input'); i.id = 'typing'; "
                           "document.getElementById('decide').appendChild(i);")
    browser.find_element(By.ID, "typing").send_keys("jwwwr")
    assert browser.execute_script(ROW_STATES)["count"].startswith("0 of 20")
    browser.execute_script("document.getElementById('typing').remove(); document.activeElement.blur();")

    # j selects the first pair, w/r/u decide it and move on; k goes back, x undoes a decision
    ActionChains(browser).send_keys("jwwwr").perform()
    state = browser.execute_script(ROW_STATES)
    assert [dec for _, dec, _ in state["rows"][:5]] == ["wrong", "wrong", "wrong", "right", ""], state
    assert state["current"] == 4 and state["count"] == "4 of 20 pairs decided: 3 wrong, 1 right, 0 not sure"
    ActionChains(browser).send_keys("u").perform()
    state = browser.execute_script(ROW_STATES)
    assert state["rows"][4][1] == "unsure" and state["current"] == 5
    ActionChains(browser).send_keys("kx").perform()
    state = browser.execute_script(ROW_STATES)
    assert state["rows"][4][1] == "" and state["current"] == 4 and state["count"].startswith("4 of 20")

    # a click decides too; a click on the chosen decision takes it back
    button = browser.find_elements(By.CSS_SELECTOR, "tr.pr")[6].find_element(By.CSS_SELECTOR, "button.unsure")
    button.click()
    assert browser.execute_script(ROW_STATES)["count"] == "5 of 20 pairs decided: 3 wrong, 1 right, 1 not sure"
    button.click()
    assert browser.execute_script(ROW_STATES)["count"].startswith("4 of 20")

    # reopened, the page has every decision back: the counter and each row's state
    browser.refresh()
    state = browser.execute_script(ROW_STATES)
    assert state["count"] == "4 of 20 pairs decided: 3 wrong, 1 right, 0 not sure"
    assert [dec for _, dec, _ in state["rows"]] == ["wrong"] * 3 + ["right"] + [""] * 16

    # the filter shows the rows of one decision
    for name, seen in (("wrong", [0, 1, 2]), ("right", [3]), ("undecided", list(range(4, 20))),
                       ("all", list(range(20)))):
        browser.find_element(By.CSS_SELECTOR, f'.filt button[data-f="{name}"]').click()
        rows = browser.execute_script(ROW_STATES)["rows"]
        assert [k for k, (_, _, visible) in enumerate(rows) if visible] == seen, name

    # the download: the report's identity in its first line, then key,decision,caption of each decided pair
    browser.find_element(By.ID, "dec-download").click()
    path = downloads / "decisions.csv"
    wait_for(lambda: path.is_file() and not list(downloads.glob("*.crdownload")))
    lines = path.read_text(encoding="utf-8").splitlines()
    fingerprint = summary["identity"]["data_fingerprint"]
    assert fingerprint == load_pair_weights(report.parent / "logs" / "plain").split_sha256  # the runs' fingerprint
    assert lines[0].startswith("#") and f"data_fingerprint {fingerprint}" in lines[0]
    rows = list(csv.reader(lines[1:]))
    assert rows[0] == ["key", "decision", "caption"]
    keys = {r["pair"]: r["key"] for r in summary["shown"]["rows"]}
    expected = [[keys[p], dec, by_pair[p]["caption"]] for p, dec in zip(pairs[:4], ["wrong"] * 3 + ["right"])]
    assert rows[1:] == expected
    # the demo's key is the pair's line in its captions file, as pairs.csv gives it
    assert [r[0] for r in rows[1:]] == [by_pair[p]["key"] for p in pairs[:4]]
    assert [by_pair[p]["rank"] for p in pairs[:4]] == ["1", "2", "3", "4"]
    severe = [m for m in browser.get_log("browser") if m["level"] == "SEVERE"]
    assert severe == []


def test_the_docs_screenshot_of_the_decision_mode_is_made_from_a_report(browser, report):
    """docs/make_review_example.py (docs/review_example.png) on the test's report: the keys it presses decide pairs."""
    import importlib.util as iu

    from PIL import Image

    spec = iu.spec_from_file_location("make_review_example",
                                      Path(__file__).resolve().parents[1] / "docs" / "make_review_example.py")
    script = iu.module_from_spec(spec)
    spec.loader.exec_module(script)
    keys = script.keys_for(report, 4)
    assert len(keys) == 5 and keys[0] == "j" and keys[3] == "u" and set(keys[1:]) <= {"w", "r", "u"}
    out = Path(os.environ.get("NPC_SCREENSHOTS") or report.parent / "screenshots") / "review_example.png"
    script.render(report, out, n_decided=4, height=700)
    with Image.open(out) as im:
        assert im.size == (1280, 700)
