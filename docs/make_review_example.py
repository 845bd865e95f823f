"""Render docs/review_example.png: the noise report's page in decision mode, a screenshot taken in headless Chromium.

    python find_noisy_pairs.py --out noise_report                  # the demo at 40% noise
    python docs/make_review_example.py --report noise_report [--out docs/review_example.png]

Opens the report's index.html from disk (as a user would, no server), decides the first pairs with the keyboard as
a person would (j to move, w wrong, r right, u not sure; here the split's known noise stands in for the person,
and one pair is left "not sure"), and captures the decision bar and the first rows (a 256-colour PNG). Needs chromium, its
driver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium, as the page's browser test does.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import tempfile
from pathlib import Path


def keys_for(report: Path, n: int) -> str:
    """The keys a person would press for the first ``n`` suspicious pairs: w for a noisy one, r for a clean one
    (the ground truth of pairs.csv standing in for the person), u for the third (a pair one is unsure of)."""
    with open(report / "pairs.csv", newline="", encoding="utf-8") as f:
        noisy = {int(r["pair"]): r.get("noisy") == "1" for r in csv.DictReader(f)}
    shown = json.loads((report / "report.json").read_text(encoding="utf-8"))["shown"]["suspicious"][:n]
    return "j" + "".join("u" if k == 2 else ("w" if noisy[j] else "r") for k, j in enumerate(shown))


def render(report: Path, out: Path, n_decided: int = 6, width: int = 1280, height: int = 1000) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    with tempfile.TemporaryDirectory() as profile:  # a fresh local storage: no decision of an earlier session
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            driver.get((report.resolve() / "index.html").as_uri())
            ActionChains(driver).send_keys(keys_for(report, n_decided)).perform()
            top = driver.execute_script("const h = document.getElementById('decisions');"
                                        "return h.getBoundingClientRect().top + window.scrollY;")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": top - 8, "width": width, "height": height, "scale": 1}})
        finally:
            driver.quit()
    import io

    from PIL import Image

    from npc.io import atomic_write_bytes

    buf = io.BytesIO()  # 256 colours (fast octree, no dither: the thumbnails keep their colours): a third of the size
    Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB").quantize(
        colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, required=True, help="a report folder written by find_noisy_pairs.py")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "review_example.png")
    ap.add_argument("--decided", type=int, default=6, help="how many of the first pairs to decide (default 6)")
    args = ap.parse_args(argv)
    render(args.report, args.out, n_decided=args.decided)


if __name__ == "__main__":
    main()
