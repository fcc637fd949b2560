"""Headless Chromium for the console's tests: Debian's ``chromium`` driven by Playwright.

Playwright is used only as a driver: its own browser downloads are never fetched (``.ci/run``
installs Debian's chromium through apt). The flags keep the browser off the network: nothing but
the pages a test opens on 127.0.0.1.

``PageRecorder`` watches a page the way a person does, only more closely: every text the
elements it watches showed, in order (the answer as it grows, the status beside it), and the
page's layout shifts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does it), "
            "or set CHROMIUM to a Chromium binary"
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


# Runs in the page through the DevTools protocol, which the page's CSP does not restrict.
_RECORDER = """
(ids) => {
  const timeline = [];
  for (const id of ids) {
    const element = document.getElementById(id);
    let last = element.textContent;
    timeline.push([id, last]);
    new MutationObserver(() => {
      const text = element.textContent;
      if (text !== last) timeline.push([id, (last = text)]);
    }).observe(element, { childList: true, characterData: true, subtree: true });
  }
  const shifts = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (!entry.hadRecentInput) shifts.push(entry.value);
    }
  }).observe({ type: "layout-shift", buffered: true });
  window.__recorded = { timeline, shifts };
}
"""


class PageRecorder:
    """Every text the elements ``ids`` showed, in the order they showed them, and the page's
    layout shifts."""

    def __init__(self, page: Page, *ids: str) -> None:
        self.page = page
        page.evaluate(_RECORDER, list(ids))

    def timeline(self) -> list[tuple[str, str]]:
        """``(element id, text)`` for each change, oldest first (the first: what each showed
        when recording began)."""
        entries: list[list[str]] = self.page.evaluate("window.__recorded.timeline")
        return [(element_id, text) for element_id, text in entries]

    def texts(self, element_id: str) -> list[str]:
        return [text for found, text in self.timeline() if found == element_id]

    def layout_shift(self) -> float:
        shifts: list[Any] = self.page.evaluate("window.__recorded.shifts")
        return float(sum(shifts))
