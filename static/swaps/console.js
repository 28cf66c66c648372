// The console's one script: the request-rate charts. Everything else is htmx.
//
// A chart starts with the points the console kept, the last five minutes of them: the
// snapshot a page is sent when its websocket connects (and reconnects) carries them in
// the chart's <script type="application/json" id="chart-history-MODEL">
// (templates/swaps/chart.html, swaps/live.py chart_history), swapped in by htmx like
// any fragment. Then a point a second arrives on the websocket as a JSON text frame
// ({"kind": "traffic", "model", "t", "rates": {version: requests per second}}); HTML
// frames are left to htmx's ws extension, which swaps them in by id.
(function () {
  "use strict";

  if (typeof uPlot === "undefined") return; // no charts, but the rest of the page works

  const HEIGHT = 160;
  const MIN_WIDTH = 240;
  // A version's line comes from its name alone, never from the order versions were
  // seen in: the same version looks the same on every load, page and console process.
  // Dashes alternate with the colours, so two lines never differ by colour alone.
  const DASHED = [6, 4];
  const STYLES = [
    { stroke: "#1f6feb" },
    { stroke: "#b35900", dash: DASHED },
    { stroke: "#1a7f37" },
    { stroke: "#8250df", dash: DASHED },
    { stroke: "#cf222e" },
    { stroke: "#57606a", dash: DASHED },
  ];
  // The charts say the time of day, to the minute (seconds on the legend): a label of
  // the default format (":15", with the date under the first) took ~95 px, and at the
  // width of a phone's chart they ran into each other.
  const AXIS_TIME = uPlot.fmtDate("{HH}:{mm}");
  const AXIS_TIME_SECONDS = uPlot.fmtDate("{HH}:{mm}:{ss}");
  const charts = new Map(); // model -> {element, beat, window, points: Map(t -> rates), versions, plot}
  const read = new WeakSet(); // the history elements already drawn from

  function styleOf(version) {
    // Numbered versions take consecutive styles (1 the first), so versions n and n + 1
    // (a swap's pair, on one chart together) never look alike; other names are hashed
    // (FNV-1a).
    let index;
    if (/^\d{1,15}$/.test(version)) {
      index = (((Number(version) - 1) % STYLES.length) + STYLES.length) % STYLES.length;
    } else {
      let hash = 0x811c9dc5;
      for (const char of version) {
        hash = Math.imul(hash ^ char.codePointAt(0), 0x01000193) >>> 0;
      }
      index = hash % STYLES.length;
    }
    return STYLES[index];
  }

  function chartFor(model) {
    const element = document.querySelector(`[data-chart][data-model="${CSS.escape(model)}"] .plot`);
    if (!element) return null;
    let chart = charts.get(model);
    if (!chart || chart.element !== element) {
      chart = { element, beat: 1, window: 300, points: new Map(), versions: [], plot: null };
      charts.set(model, chart);
    }
    return chart;
  }

  function width(chart) {
    return Math.max(chart.element.clientWidth, MIN_WIDTH);
  }

  // The points in time order, a version's missing value as null, and a null row where
  // nobody watched for a while (no point was stored), so the line breaks there rather
  // than drawing a straight line across the gap.
  function columns(chart) {
    const times = [...chart.points.keys()].sort((a, b) => a - b);
    const data = [[], ...chart.versions.map(() => [])];
    let previous = null;
    for (const t of times) {
      if (previous !== null && t - previous > 2.5 * chart.beat) {
        data[0].push(previous + chart.beat);
        for (let i = 1; i < data.length; i++) data[i].push(null);
      }
      const rates = chart.points.get(t);
      data[0].push(t);
      chart.versions.forEach((version, i) => data[i + 1].push(version in rates ? rates[version] : null));
      previous = t;
    }
    return data;
  }

  function axisTimes(u, splits, axis, space, incr) {
    const format = incr < 60 ? AXIS_TIME_SECONDS : AXIS_TIME;
    return splits.map((t) => format(new Date(t * 1000)));
  }

  function draw(chart) {
    const versions = [...new Set([...chart.points.values()].flatMap(Object.keys))].sort();
    const rebuild = !chart.plot || versions.join("\n") !== chart.versions.join("\n");
    chart.versions = versions;
    const data = columns(chart);
    if (!rebuild) {
      chart.plot.setData(data);
      return;
    }
    // uPlot's series are fixed: a version appearing (or leaving the window) rebuilds it.
    if (chart.plot) chart.plot.destroy();
    chart.plot = new uPlot(
      {
        width: width(chart),
        height: HEIGHT,
        scales: {
          // Always the whole window, ending at the latest point: the chart reads the
          // same on every load, however few points there are yet.
          x: { time: true, range: (u, min, max) => [max - chart.window, max] },
          y: { range: (u, min, max) => [0, Math.max(1, max)] },
        },
        axes: [
          // At least 50 px between ticks (a label is ~35 px), at whole minutes over
          // five: every minute on a wide chart, every other on a phone's.
          { space: 50, incrs: [15, 30, 60, 120, 300, 600], values: axisTimes },
          { label: "req/s" },
        ],
        legend: { markers: { dash: (u, i) => (u.series[i].dash ? "dashed" : "solid") } },
        series: [
          { value: (u, t) => (t == null ? "--" : AXIS_TIME_SECONDS(new Date(t * 1000))) },
          ...versions.map((version) => ({ label: `version ${version}`, width: 2, ...styleOf(version) })),
        ],
      },
      data,
      chart.element,
    );
  }

  function trim(chart) {
    const latest = Math.max(...chart.points.keys());
    for (const t of chart.points.keys()) {
      if (t <= latest - chart.window) chart.points.delete(t);
    }
  }

  function add(point) {
    const chart = chartFor(point.model);
    if (!chart) return;
    chart.points.set(point.t, point.rates);
    trim(chart);
    draw(chart);
  }

  // The stored history replaces what the chart had, but for points that arrived after
  // it was read (they are newer than its last).
  function load(model, history) {
    const chart = chartFor(model);
    if (!chart) return;
    chart.beat = history.beat;
    chart.window = history.window;
    const last = history.points.length ? history.points[history.points.length - 1].t : -Infinity;
    const newer = [...chart.points].filter(([t]) => t > last);
    chart.points = new Map([...history.points.map((p) => [p.t, p.rates]), ...newer]);
    if (chart.points.size) {
      trim(chart);
      draw(chart);
    }
  }

  function loadHistories() {
    for (const element of document.querySelectorAll('[data-chart] script[id^="chart-history-"]')) {
      if (read.has(element)) continue;
      read.add(element);
      const history = JSON.parse(element.textContent);
      if (history) load(element.closest("[data-chart]").dataset.model, history);
    }
  }

  document.addEventListener("htmx:wsBeforeMessage", (event) => {
    const message = event.detail.message;
    if (typeof message !== "string" || message[0] !== "{") return;
    event.preventDefault(); // JSON is for the chart, not for swapping
    try {
      const point = JSON.parse(message);
      if (point.kind === "traffic") add(point);
    } catch (error) {
      console.warn("hotswap: unreadable chart point", error);
    }
  });

  document.addEventListener("htmx:wsAfterMessage", () => {
    try {
      loadHistories();
    } catch (error) {
      console.warn("hotswap: unreadable chart history", error);
    }
  });

  window.addEventListener("resize", () => {
    for (const chart of charts.values()) {
      if (chart.plot) chart.plot.setSize({ width: width(chart), height: HEIGHT });
    }
  });
})();
