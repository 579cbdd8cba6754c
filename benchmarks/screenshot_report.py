"""Screenshot of report.html in headless Chromium, hovering a policy mid-front (docs/figures/report_interactive.png).

    python benchmarks/screenshot_report.py runs/quickstart/report/report.html docs/figures/report_interactive.png
"""
import shutil
import sys
from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright


def main(page_path: str, out: str, plot: str = "plot-pareto_flops") -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1150, "height": 900}, device_scale_factor=1)
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_selector(f"#{plot} .main-svg")
        points = page.locator(f"#{plot} .scatterlayer .point")
        points.first.scroll_into_view_if_needed()
        front = pd.read_csv(Path(page_path).resolve().parents[1] / "pareto.csv", dtype={"trial_id": str})
        wanted = [f"trial {t}" for t in front.sort_values("accuracy")["trial_id"]][1:-1]  # not the front's ends
        for i in range(points.count()):
            box = points.nth(i).bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_timeout(300)
            if any(w in (page.locator(f"#{plot} .hoverlayer").text_content() or "") for w in wanted):
                break
        page.locator(f"#{plot}").screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
