"""Headless Chromium screenshots of a running Dagster webserver (a manual review aid; no test uses it).

It needs Playwright, which is not a project dependency; install it in a venv of its own and point
it at the system Chromium (Playwright's own browser download is not needed):

    python -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    apt-get install chromium
    /tmp/pw/bin/python scripts/screenshots.py http://127.0.0.1:3000 out/ \\
        "assets/demo/evaluation_report" "assets/demo/evaluation_report?view=checks"

Each page is loaded, given time to render its metadata (images included) and saved as a full-page
PNG named after its path. The UI scrolls inside its own panes, so a tall `--height` shows more
than `full_page` would. `--click TEXT` clicks the first element showing TEXT before the shot
(for example a check's name, to open its detail panel).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path


def shot_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "home"


def dismiss_welcome(page) -> None:
    """The first visit opens a community sign-up dialog over the page; skip it."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()
        page.wait_for_timeout(300)


def take(base_url: str, paths: list[str], out_dir: Path, *, executable: str, width: int, height: int,
         wait_ms: int, click: str | None = None, nth: int = 0) -> list[Path]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": width, "height": height})
        for path in paths:
            url = f"{base_url.rstrip('/')}/{path.lstrip('/')}"
            page = context.new_page()   # a fresh page: hash-only changes would not reload
            page.goto(url, wait_until="load", timeout=60_000)
            with contextlib.suppress(PlaywrightTimeout):   # pages that poll never go idle
                page.wait_for_load_state("networkidle", timeout=20_000)
            page.wait_for_timeout(wait_ms)
            dismiss_welcome(page)
            name = shot_name(path)
            if click:
                page.get_by_text(click, exact=False).nth(nth).click()
                page.wait_for_timeout(wait_ms)
                name += "__" + shot_name(click) + (f"_{nth}" if nth else "")
            target = out_dir / f"{name}.png"
            page.screenshot(path=str(target), full_page=True)
            saved.append(target)
            print(target)
            page.close()
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:3000")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("paths", nargs="+", help="UI paths, e.g. assets/demo/trained_model")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--wait-ms", type=int, default=2500, help="extra time for images and lazy panels")
    parser.add_argument("--click", help="text of an element to click before each screenshot")
    parser.add_argument("--nth", type=int, default=0, help="which match of --click (0 = first)")
    args = parser.parse_args(argv)
    take(args.base_url, args.paths, args.out_dir, executable=args.chromium, width=args.width,
         height=args.height, wait_ms=args.wait_ms, click=args.click, nth=args.nth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
