"""The request-rate chart in a real headless Chromium, against the real thing.

The same processes as tests/browser/test_console.py (tests/browser/conftest.py): a daphne
console, a replica, an RQ worker. An init script keeps every uPlot chart the page builds in
`window.__plots`, so the test reads what is drawn: the points, the legend's colours and
the time axis' labels where uPlot put them. Screenshots go to test-output/screenshots/.
"""

from __future__ import annotations

import itertools
import time

import pytest
from playwright.sync_api import Browser, Page, expect

from swaps import live
from swaps.models import ServedModel
from tests.fleet_models import gated_spec

from ..live import Traffic
from ..live_fleet import serve
from ..processes import wait_until
from . import test_console
from .test_console import SCREENSHOTS, WAIT_MS, off_the_loop, open_live, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

# test_console's fixtures, used here as they are there.
browser = test_console.browser
alice = test_console.alice
held_model = test_console.held_model

PLOTS = """
window.__plots = [];
let realUPlot;
Object.defineProperty(window, "uPlot", {
  configurable: true,
  get() { return realUPlot; },
  set(value) {
    realUPlot = new Proxy(value, {
      construct(target, args) {
        const plot = new target(...args);
        window.__plots.push(plot);
        return plot;
      },
    });
  },
});

// What the chart of `model` shows now, or null before it is drawn.
window.__chart = (model) => {
  const plot = window.__plots
    .filter((p) => p.root.isConnected && p.root.closest(`[data-model="${model}"]`))
    .at(-1);
  if (!plot || !plot.axes[0]._values) return null;
  const series = {};
  plot.series.slice(1).forEach((s, i) => { series[s.label] = plot.data[i + 1]; });
  const colours = {};
  for (const row of [...plot.root.querySelectorAll(".u-legend .u-series")].slice(1)) {
    const marker = getComputedStyle(row.querySelector(".u-marker"));
    const label = row.querySelector(".u-label").textContent;
    colours[label] = `${marker.borderColor} ${marker.borderStyle}`;
  }
  // Each time label's extent, as uPlot centres it on its tick (in CSS pixels).
  const axis = plot.axes[0];
  const context = document.createElement("canvas").getContext("2d");
  context.font = axis.font[0];
  const labels = axis._values.map((text, i) => {
    const lines = String(text).split("\\n");
    const width = Math.max(...lines.map((l) => context.measureText(l).width)) / devicePixelRatio;
    const x = plot.valToPos(axis._splits[i], "x");
    return { text, left: x - width / 2, right: x + width / 2 };
  });
  return { times: plot.data[0], series, colours, labels };
};
"""


PAGES = (("model", "/models/held/"), ("dashboard", "/"))


def watch(browser: Browser, console, user, path: str, *, width: int = 1280) -> Page:
    page = signed_in(browser, console, user, width=width)
    page.add_init_script(PLOTS)
    return open_live(page, f"{console.url}{path}")


def chart(page: Page, model: str = "held") -> dict | None:
    return page.evaluate("(model) => window.__chart(model)", model)


def served_points(model: str = "held", version: str = "1") -> int:
    """How many stored chart points show `version` serving requests."""
    points = live.stored_points([model])[model]
    return sum(1 for point in points if point["rates"].get(version, 0) > 0)


@pytest.fixture
def serving_2(replica, db) -> ServedModel:
    """held 2 serving, 1 registered: a swap from 2 to 1 adds a version that sorts first."""
    specs = [gated_spec(version="2"), gated_spec(version="1")]
    return off_the_loop(lambda: serve("held", specs, replica))


def test_a_page_opened_after_traffic_flowed_shows_the_points_from_before_it_was_opened(
    browser, console, replica, held_model, alice
):
    watcher = watch(browser, console, alice, "/models/held/")
    with Traffic([replica], model="held", threads=1, pause=0.05):
        wait_until(lambda: served_points() >= 5, timeout=90, what="5 points of traffic stored")
    watcher.context.close()  # nobody watches now: the console's live task stops

    opened = time.time()
    page = watch(browser, console, alice, "/models/held/")

    history = page.locator("#chart-history-held")
    expect(history, "the page's snapshot brings the stored points").not_to_have_text(
        "null", timeout=WAIT_MS
    )
    page.wait_for_function(
        """([model, opened]) => {
          const shown = window.__chart(model);
          const served = shown && shown.series["version 1"];
          return served && shown.times.filter((t, i) => t < opened && served[i] > 0).length >= 5;
        }""",
        arg=["held", opened],
        timeout=WAIT_MS,
    )
    page.screenshot(path=SCREENSHOTS / "chart-history-on-load.png", full_page=True)


def test_a_versions_colour_is_the_same_on_two_loads(
    browser, console, worker, replica, serving_2, alice
):
    first = watch(browser, console, alice, "/models/held/")
    first.wait_for_function("() => window.__chart('held')?.colours['version 2']", timeout=WAIT_MS)
    # A swap to 1 puts a version on the chart that is seen later but sorts first.
    first.get_by_label("To version").select_option("1")
    first.get_by_role("button", name="Start swap").click()
    expect(first.locator("#swap-state-held")).to_have_attribute(
        "data-state", "completed", timeout=WAIT_MS
    )
    both = "() => Object.keys(window.__chart('held')?.colours ?? {}).length === 2"
    first.wait_for_function(both, timeout=WAIT_MS)

    second = watch(browser, console, alice, "/models/held/")
    second.wait_for_function(both, timeout=WAIT_MS)

    colours = chart(first)["colours"]
    assert chart(second)["colours"] == colours
    assert colours["version 1"] != colours["version 2"]
    first.locator("#chart-held").screenshot(path=SCREENSHOTS / "chart-colours-first-load.png")
    second.locator("#chart-held").screenshot(path=SCREENSHOTS / "chart-colours-second-load.png")


@pytest.mark.parametrize("width", [1280, 390])
def test_the_time_axis_labels_do_not_overlap(browser, console, replica, held_model, alice, width):
    # Both pages watch the same traffic: the chart fills on both in one wait.
    pages = {name: watch(browser, console, alice, path, width=width) for name, path in PAGES}
    with Traffic([replica], model="held", threads=1, pause=0.05):
        for page in pages.values():
            page.wait_for_function(
                "() => (window.__chart('held')?.times.length ?? 0) >= 5", timeout=WAIT_MS
            )

    for name, page in pages.items():
        shown = chart(page)
        page.locator("#chart-held").screenshot(path=SCREENSHOTS / f"chart-axis-{name}-{width}.png")
        labels = shown["labels"]
        assert len(labels) >= 2, (name, labels)  # the axis says when, on a phone too
        gaps = [b["left"] - a["right"] for a, b in itertools.pairwise(labels)]
        assert min(gaps) >= 8, (name, labels)
        assert all("\n" not in label["text"] for label in labels), (name, labels)  # one line
        assert page.evaluate("document.documentElement.scrollWidth") <= width, name
        page.context.close()
