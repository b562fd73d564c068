// A small line-chart renderer on <canvas>: time on x, one or more series on y, a legend.
// drawChart(canvas, times, [{label, values, color}], unit). Values are numbers; times are epoch seconds.
"use strict";

function drawChart(canvas, times, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 480;
  const height = canvas.clientHeight || 180;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 56, right = 8, top = 22, bottom = 20;
  const plotW = width - left - right, plotH = height - top - bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  max = niceMax(max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#ddd";
  ctx.fillStyle = "#555";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {  // grid and y labels
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
    ctx.fillText(formatNumber((max * i) / 4) + (i === 4 && unit ? " " + unit : ""), 4, y + 4);
  }
  const n = times.length;
  if (n > 1) {
    const t0 = times[0], t1 = times[n - 1];
    ctx.fillText(formatTime(t0), left, height - 4);
    const last = formatTime(t1);
    ctx.fillText(last, left + plotW - ctx.measureText(last).width, height - 4);
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      const offset = n - s.values.length;  // a series may be shorter (history started later)
      s.values.forEach((v, i) => {
        const x = left + (plotW * (times[i + offset] - t0)) / Math.max(t1 - t0, 1e-9);
        const y = top + plotH - (plotH * v) / max;
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  } else {
    ctx.fillText("waiting for samples…", left + 8, top + plotH / 2);
  }
  let x = left;  // legend: label and latest value
  for (const s of series) {
    const latest = s.values.length ? s.values[s.values.length - 1] : 0;
    const text = s.label + " " + formatNumber(latest);
    ctx.fillStyle = s.color;
    ctx.fillRect(x, 6, 10, 10);
    ctx.fillStyle = "#222";
    ctx.fillText(text, x + 14, 15);
    x += ctx.measureText(text).width + 28;
  }
  canvas.dataset.points = String(n);
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (v >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

function formatTime(t) {
  return new Date(t * 1000).toLocaleTimeString();
}
