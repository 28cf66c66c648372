// The console's one script: the request-rate charts. Everything else is htmx.
//
// Chart points arrive on the page's websocket as JSON text frames
// ({"kind": "traffic", "model", "t", "rates": {version: requests per second}}); HTML
// frames are left to htmx's ws extension, which swaps them in by id.
(function () {
  "use strict";

  const WINDOW_SECONDS = 300;
  const COLOURS = ["#1f6feb", "#b35900", "#1a7f37", "#8250df", "#cf222e", "#57606a"];
  const charts = new Map(); // model -> {element, versions, data, plot}

  function chartFor(model) {
    let chart = charts.get(model);
    const element = document.querySelector(`[data-chart][data-model="${CSS.escape(model)}"] .plot`);
    if (!element) return null;
    if (!chart || chart.element !== element) {
      chart = { element, versions: [], times: [], series: {}, plot: null };
      charts.set(model, chart);
    }
    return chart;
  }

  function draw(chart) {
    const data = [chart.times, ...chart.versions.map((v) => chart.series[v])];
    if (chart.plot && chart.plot.series.length === chart.versions.length + 1) {
      chart.plot.setData(data);
      return;
    }
    // A new version appeared: uPlot's series are fixed, so the chart is rebuilt.
    if (chart.plot) chart.plot.destroy();
    chart.plot = new uPlot(
      {
        width: Math.max(chart.element.clientWidth, 240),
        height: 160,
        scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { label: "req/s" }],
        series: [
          {},
          ...chart.versions.map((version, i) => ({
            label: `version ${version}`,
            stroke: COLOURS[i % COLOURS.length],
            width: 2,
            dash: i % 2 ? [6, 4] : undefined, // not colour alone
          })),
        ],
      },
      data,
      chart.element,
    );
  }

  function add(point) {
    const chart = chartFor(point.model);
    if (!chart) return;
    for (const version of Object.keys(point.rates).sort()) {
      if (!chart.versions.includes(version)) {
        chart.versions.push(version);
        chart.series[version] = chart.times.map(() => null);
      }
    }
    chart.times.push(point.t);
    for (const version of chart.versions) {
      chart.series[version].push(version in point.rates ? point.rates[version] : null);
    }
    while (chart.times.length && chart.times[0] < point.t - WINDOW_SECONDS) {
      chart.times.shift();
      for (const version of chart.versions) chart.series[version].shift();
    }
    if (typeof uPlot !== "undefined") draw(chart);
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

  window.addEventListener("resize", () => {
    for (const chart of charts.values()) {
      if (chart.plot) chart.plot.setSize({ width: Math.max(chart.element.clientWidth, 240), height: 160 });
    }
  });
})();
