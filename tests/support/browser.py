"""A real browser for the page tests: Debian's Chromium driven by Playwright, axe-core
injected for accessibility, screenshots kept as artifacts.

Chromium comes from Debian (deploy/dev/bootstrap.sh installs ``chromium``); Playwright never
downloads a browser here. axe-core comes from the npm registry, installed by the bootstrap
under ``.cache/npm``. Screenshots go to ``artifacts/pages/<test>/`` (ignored by git), or
under ``CHARGEMITRA_ARTIFACTS_DIR`` when set.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_JS = ROOT / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
PHONE: ViewportSize = {"width": 360, "height": 640}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
#: The impacts that fail a page.
BLOCKING = frozenset({"serious", "critical"})


def artifacts_dir(test_name: str) -> Path:
    base = Path(os.environ.get("CHARGEMITRA_ARTIFACTS_DIR", ROOT / "artifacts"))
    path = base / "pages" / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Tour:
    """One browser context walking the pages: every step is screenshot and checked by axe
    at both sizes, light and dark; Content-Security-Policy reports are collected."""

    context: BrowserContext
    page: Page
    out: Path
    csp_reports: list[str] = field(default_factory=list)
    steps: int = 0
    axe_failures: list[str] = field(default_factory=list)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp_reports.append(message.text)

    async def check(self, name: str) -> None:
        """Screenshot the page as it is now (360x640 light, also 1280x800 and dark) and run
        axe-core in each; serious or critical violations are collected."""
        self.steps += 1
        page = self.page
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
                await page.set_viewport_size(size)
                shot = self.out / f"{self.steps:02d}-{name}-{label}-{scheme}.png"
                await page.screenshot(path=str(shot), full_page=True)
                for violation in await axe(page):
                    nodes = ", ".join(n["target"][0] for n in violation["nodes"][:3])
                    self.axe_failures.append(
                        f"{name} {label} {scheme}: {violation['id']} ({violation['impact']}): "
                        f"{violation['help']} at {nodes}"
                    )
        await page.emulate_media(color_scheme="light")
        await page.set_viewport_size(PHONE)


async def axe(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (WCAG 2.1 A/AA rules).

    The script is evaluated through the DevTools protocol, which the page's CSP does not
    govern (a ``<script>`` tag would be refused, as it should be)."""
    loaded = await page.evaluate("() => typeof window.axe !== 'undefined'")
    if not loaded:
        await page.evaluate(AXE_JS.read_text())
    result: dict[str, Any] = await page.evaluate(
        """async () => await axe.run(document, {
            runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa",
                                             "best-practice"]},
            resultTypes: ["violations"]})"""
    )
    # Not vacuous: axe really ran and checked rules on this page.
    assert result["testEngine"]["name"] == "axe-core", result.get("testEngine")
    return [v for v in result["violations"] if v.get("impact") in BLOCKING]


@asynccontextmanager
async def tour(browser: Browser, out: Path, **context_options: Any) -> AsyncIterator[Tour]:
    context = await browser.new_context(viewport=PHONE, **context_options)
    try:
        page = await context.new_page()
        walk = Tour(context, page, out)
        page.on("console", walk._console)
        yield walk
    finally:
        await context.close()
