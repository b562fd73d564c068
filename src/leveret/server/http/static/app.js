// Leveret's management UI: plain DOM, no framework. Every piece of broker data reaches the page
// through textContent (el() below), never innerHTML, so names like <script> stay text.
"use strict";

const POLL_MS = 2000;
let auth = sessionStorage.getItem("leveret-auth");
let timer = null;
let refreshNow = () => {};

// ------------------------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v != null) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c == null) continue;
    node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return node;
}

function replace(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c != null));
}

async function api(method, path, body) {
  const headers = { "Authorization": "Basic " + auth, "x-leveret-ui": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch("/api" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (resp.status === 401 && path === "/whoami") throw new Error((data && data.reason) || "Login failed");
  if (resp.status === 401 && !data?.reason?.includes("refused")) { logout(); throw new Error("not logged in"); }
  if (!resp.ok) throw new Error((data && data.reason) || resp.statusText);
  return data;
}

const enc = encodeURIComponent;
const rate = (d) => (d && typeof d.rate === "number" ? d.rate.toFixed(1) + "/s" : "");

function table(columns, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.title)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => el("td", { class: c.num ? "num" : null }, c.cell(r)))))));
}

function status(text, ok) {
  replace(document.getElementById("status"), el("span", { class: ok ? "ok" : "error" }, text));
}

function poll(refresh) {
  const run = () => refresh().catch((e) => status(e.message, false));
  refreshNow = run;
  run();
  timer = setInterval(run, POLL_MS);
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function action(fn) {  // a form's submit handler: no reload, errors shown in the footer
  return async (event) => {
    event.preventDefault();
    try { await fn(event.target); } catch (e) { status(e.message, false); }
  };
}

function vhostSelect(vhosts) {
  return el("select", { name: "vhost" }, vhosts.map((v) => el("option", { value: v.name }, v.name)));
}

// -------------------------------------------------------------------------------------- pages

const pages = {
  overview(page) {
    const totals = el("div", { class: "card" });
    const depth = el("canvas", { id: "chart-depth" });
    const rates = el("canvas", { id: "chart-rates" });
    const handlers = el("div", { id: "handler-list" });
    replace(page, el("h2", {}, "Overview"), totals,
      el("div", { class: "charts" },
        el("div", { class: "card" }, el("h3", {}, "Queued messages L(t)"), depth),
        el("div", { class: "card" }, el("h3", {}, "Message rates f(t), g(t), handled h(t)"), rates)),
      el("div", { class: "card" }, el("h3", {}, "Handlers"), handlers));
    poll(async () => {
      const [o, groups] = await Promise.all([api("GET", "/overview?flow=true"), api("GET", "/leveret/handlers")]);
      const t = o.queue_totals, n = o.object_totals, s = o.message_stats;
      replace(totals, el("dl", { class: "facts" },
        el("dt", {}, "Ready"), el("dd", { id: "total-ready" }, t.messages_ready),
        el("dt", {}, "Unacked"), el("dd", {}, t.messages_unacknowledged),
        el("dt", {}, "Publish / deliver / ack"), el("dd", {}, `${rate(s.publish_details)} / ${rate(s.deliver_get_details)} / ${rate(s.ack_details)}`),
        el("dt", {}, "Handled h(t)"), el("dd", { id: "handler-rate" }, rate({ rate: o.handler_rate })),
        el("dt", {}, "Connections, channels, consumers"), el("dd", {}, `${n.connections}, ${n.channels}, ${n.consumers}`),
        el("dt", {}, "Queues, exchanges"), el("dd", {}, `${n.queues}, ${n.exchanges}`),
        el("dt", {}, "Version"), el("dd", {}, `${o.product_name} ${o.product_version} on ${o.node}`)));
      const f = o.leveret_flow;
      drawChart(depth, f.times, [
        { label: "ready", values: f.ready, color: "#e67e22" },
        { label: "unacked", values: f.unacked, color: "#8e44ad" }], "msg");
      drawChart(rates, f.times, [
        { label: "publish", values: f.publish, color: "#2980b9" },
        { label: "deliver", values: f.deliver, color: "#27ae60" },
        { label: "ack", values: f.ack, color: "#7f8c8d" },
        { label: "handled h", values: f.handle, color: "#c0392b" }], "/s");
      replace(handlers, groups.length ? table([
        { title: "Group", cell: (g) => g.group },
        { title: "Pattern", cell: (g) => g.pattern },
        { title: "Instances", num: true, cell: (g) => g.instances },
        { title: "h(t)", num: true, cell: (g) => rate({ rate: g.handled_rate }) },
        { title: "Handled", num: true, cell: (g) => g.handled },
        { title: "In flight", num: true, cell: (g) => g.in_flight },
        { title: "Failed", num: true, cell: (g) => g.failed },
        { title: "Retried", num: true, cell: (g) => g.retried },
        { title: "Dead-lettered", num: true, cell: (g) => g.dead_lettered },
      ], groups) : el("p", {}, "No handler group reports (leveret.events buses report every 5 s)"));
    });
  },

  async queues(page) {
    const vhosts = await api("GET", "/vhosts");
    const list = el("div", { class: "card", id: "queue-list" });
    const filter = el("input", { name: "filter", placeholder: "filter by name" });
    const declare = el("form", { class: "inline card", id: "declare-queue", on: { submit: action(async (form) => {
      const v = formValues(form);
      const args = {};
      if (v.max_length) args["x-max-length"] = Number(v.max_length);
      await api("PUT", `/queues/${enc(v.vhost)}/${enc(v.name)}`, { durable: form.durable.checked, auto_delete: false, arguments: args });
      status(`queue ${v.name} declared`, true);
      form.reset();
      refreshNow();
    }) } },
      el("strong", {}, "Add a queue"), vhostSelect(vhosts),
      el("label", {}, "Name", el("input", { name: "name", required: true })),
      el("label", {}, "Max length", el("input", { name: "max_length", type: "number", min: 0 })),
      el("label", {}, "Durable", el("input", { name: "durable", type: "checkbox", checked: true })),
      el("button", { type: "submit" }, "Add queue"));
    replace(page, el("h2", {}, "Queues"), filter, list, declare);
    poll(async () => {
      const name = filter.value ? "&name=" + enc(filter.value) : "";
      const data = await api("GET", `/queues?page=1&page_size=500${name}`);
      replace(list, el("p", {}, `${data.filtered_count} of ${data.total_count} queues`), table([
        { title: "Virtual host", cell: (q) => q.vhost },
        { title: "Name", cell: (q) => el("a", { href: `#/queue/${enc(q.vhost)}/${enc(q.name)}` }, q.name) },
        { title: "Type", cell: (q) => q.type },
        { title: "Features", cell: (q) => [q.durable ? "D" : "", q.auto_delete ? "AD" : "", q.exclusive ? "Excl" : ""].join(" ") },
        { title: "Ready", num: true, cell: (q) => q.messages_ready },
        { title: "Unacked", num: true, cell: (q) => q.messages_unacknowledged },
        { title: "Publish", num: true, cell: (q) => rate(q.message_stats.publish_details) },
        { title: "Deliver", num: true, cell: (q) => rate(q.message_stats.deliver_get_details) },
        { title: "Ack", num: true, cell: (q) => rate(q.message_stats.ack_details) },
        { title: "Consumers", num: true, cell: (q) => q.consumers },
        { title: "Forecast", cell: (q) => q.leveret_forecast.text },
      ], data.items));
    });
  },

  queue(page, vhost, name) {
    const path = `/queues/${enc(vhost)}/${enc(name)}`;
    const facts = el("div", { class: "card" });
    const forecast = el("p", { class: "forecast", id: "forecast" });
    const depth = el("canvas", { id: "chart-queue-depth" });
    const rates = el("canvas", { id: "chart-queue-rates" });
    const results = el("div", { id: "get-results" });
    const publish = el("form", { class: "inline card", id: "publish", on: { submit: action(async (form) => {
      const v = formValues(form);
      const props = form.persistent.checked ? { delivery_mode: 2 } : {};
      const out = await api("POST", `/exchanges/${enc(vhost)}/amq.default/publish`,
        { routing_key: name, payload: v.payload, payload_encoding: "string", properties: props });
      status(out.routed ? "message published" : "message published but not routed", out.routed);
      refreshNow();
    }) } },
      el("strong", {}, "Publish"),
      el("label", {}, "Payload", el("textarea", { name: "payload", rows: 2, cols: 40 })),
      el("label", {}, "Persistent", el("input", { name: "persistent", type: "checkbox" })),
      el("button", { type: "submit" }, "Publish message"));
    const get = el("form", { class: "inline card", id: "get", on: { submit: action(async (form) => {
      const v = formValues(form);
      const msgs = await api("POST", `${path}/get`, { count: Number(v.count), ackmode: v.ackmode, encoding: "auto" });
      replace(results, msgs.length ? table([
        { title: "#", cell: (m) => msgs.indexOf(m) + 1 },
        { title: "Routing key", cell: (m) => m.routing_key },
        { title: "Redelivered", cell: (m) => String(m.redelivered) },
        { title: "Properties", cell: (m) => JSON.stringify(m.properties) },
        { title: "Payload", cell: (m) => el("pre", { class: "payload" }, m.payload) },
      ], msgs) : el("p", {}, "Queue is empty"));
    }) } },
      el("strong", {}, "Get messages"),
      el("label", {}, "Ack mode", el("select", { name: "ackmode" },
        ["ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"].map((m) => el("option", { value: m }, m)))),
      el("label", {}, "Count", el("input", { name: "count", type: "number", value: 1, min: 1 })),
      el("button", { type: "submit" }, "Get messages"));
    const purge = el("button", { type: "button", id: "purge", on: { click: async () => {
      try { await api("DELETE", `${path}/contents`); status("queue purged", true); refreshNow(); } catch (e) { status(e.message, false); }
    } } }, "Purge messages");
    const remove = el("button", { type: "button", class: "danger", id: "delete", on: { click: async () => {
      if (!window.confirm(`Delete queue ${name}?`)) return;
      try { await api("DELETE", path); status(`queue ${name} deleted`, true); location.hash = "#/queues"; } catch (e) { status(e.message, false); }
    } } }, "Delete queue");
    replace(page, el("h2", {}, "Queue ", el("span", { id: "queue-name" }, name), " in ", vhost), facts, forecast,
      el("div", { class: "charts" },
        el("div", { class: "card" }, el("h3", {}, "Depth L(t)"), depth),
        el("div", { class: "card" }, el("h3", {}, "Publish f(t), deliver and ack g(t)"), rates)),
      publish, get, results, el("div", { class: "card" }, purge, " ", remove));
    poll(async () => {
      const q = await api("GET", `${path}?flow=true`);
      replace(facts, el("dl", { class: "facts" },
        el("dt", {}, "Ready / unacked"), el("dd", { id: "queue-depth" }, `${q.messages_ready} / ${q.messages_unacknowledged}`),
        el("dt", {}, "Consumers"), el("dd", {}, `${q.consumers}` + (q.consumer_utilisation == null ? "" : ` (utilisation ${(q.consumer_utilisation * 100).toFixed(0)}%)`)),
        el("dt", {}, "Type, features"), el("dd", {}, `${q.type}${q.durable ? ", durable" : ""}${q.auto_delete ? ", auto-delete" : ""}${q.exclusive ? ", exclusive" : ""}`),
        el("dt", {}, "Arguments"), el("dd", {}, JSON.stringify(q.arguments)),
        el("dt", {}, "Policy"), el("dd", {}, q.policy || "")));
      forecast.textContent = "Forecast: " + q.leveret_forecast.text;
      const f = q.leveret_flow;
      if (f) {
        drawChart(depth, f.times, [
          { label: "ready", values: f.ready, color: "#e67e22" },
          { label: "unacked", values: f.unacked, color: "#8e44ad" }], "msg");
        drawChart(rates, f.times, [
          { label: "publish f", values: f.publish, color: "#2980b9" },
          { label: "deliver g", values: f.deliver, color: "#27ae60" },
          { label: "ack", values: f.ack, color: "#7f8c8d" }], "/s");
      }
    });
  },

  async exchanges(page) {
    const vhosts = await api("GET", "/vhosts");
    const list = el("div", { class: "card" });
    const declare = el("form", { class: "inline card", id: "declare-exchange", on: { submit: action(async (form) => {
      const v = formValues(form);
      await api("PUT", `/exchanges/${enc(v.vhost)}/${enc(v.name)}`, { type: v.type, durable: form.durable.checked });
      status(`exchange ${v.name} declared`, true);
      form.reset();
      refreshNow();
    }) } },
      el("strong", {}, "Add an exchange"), vhostSelect(vhosts),
      el("label", {}, "Name", el("input", { name: "name", required: true })),
      el("label", {}, "Type", el("select", { name: "type" }, ["direct", "fanout", "topic", "headers"].map((t) => el("option", {}, t)))),
      el("label", {}, "Durable", el("input", { name: "durable", type: "checkbox", checked: true })),
      el("button", { type: "submit" }, "Add exchange"));
    replace(page, el("h2", {}, "Exchanges"), list, declare);
    poll(async () => {
      const data = await api("GET", "/exchanges");
      replace(list, table([
        { title: "Virtual host", cell: (e) => e.vhost },
        { title: "Name", cell: (e) => e.name || "(AMQP default)" },
        { title: "Type", cell: (e) => e.type },
        { title: "Features", cell: (e) => [e.durable ? "D" : "", e.auto_delete ? "AD" : "", e.internal ? "I" : ""].join(" ") },
        { title: "In", num: true, cell: (e) => rate(e.message_stats.publish_in_details) },
        { title: "Out", num: true, cell: (e) => rate(e.message_stats.publish_out_details) },
        { title: "", cell: (e) => e.name && !e.name.startsWith("amq.") ? el("button", { type: "button", class: "danger", on: { click: async () => {
          try { await api("DELETE", `/exchanges/${enc(e.vhost)}/${enc(e.name)}`); status(`exchange ${e.name} deleted`, true); refreshNow(); } catch (err) { status(err.message, false); }
        } } }, "Delete") : null },
      ], data));
    });
  },

  bindings(page) {
    const list = el("div", { class: "card" });
    replace(page, el("h2", {}, "Bindings"), list);
    poll(async () => {
      const data = await api("GET", "/bindings");
      replace(list, table([
        { title: "Virtual host", cell: (b) => b.vhost },
        { title: "Source", cell: (b) => b.source || "(AMQP default)" },
        { title: "Destination", cell: (b) => `${b.destination_type} ${b.destination}` },
        { title: "Routing key", cell: (b) => b.routing_key },
        { title: "Arguments", cell: (b) => JSON.stringify(b.arguments) },
      ], data));
    });
  },

  connections(page) {
    const list = el("div", { class: "card" });
    replace(page, el("h2", {}, "Connections"), list);
    poll(async () => {
      const data = await api("GET", "/connections");
      replace(list, table([
        { title: "Name", cell: (c) => c.name },
        { title: "User", cell: (c) => c.user },
        { title: "Virtual host", cell: (c) => c.vhost },
        { title: "Client", cell: (c) => `${c.client_properties.product || ""} ${c.client_properties.version || ""}` },
        { title: "Channels", num: true, cell: (c) => c.channels },
        { title: "Heartbeat", num: true, cell: (c) => c.timeout },
        { title: "", cell: (c) => el("button", { type: "button", class: "danger", on: { click: async () => {
          try { await api("DELETE", `/connections/${enc(c.name)}`); status("connection closed", true); refreshNow(); } catch (err) { status(err.message, false); }
        } } }, "Close") },
      ], data));
    });
  },

  channels(page) {
    const list = el("div", { class: "card" });
    replace(page, el("h2", {}, "Channels"), list);
    poll(async () => {
      const data = await api("GET", "/channels");
      replace(list, table([
        { title: "Channel", cell: (c) => c.name },
        { title: "User", cell: (c) => c.user },
        { title: "Virtual host", cell: (c) => c.vhost },
        { title: "Mode", cell: (c) => (c.confirm ? "confirm" : "") + (c.transactional ? "tx" : "") },
        { title: "Prefetch", num: true, cell: (c) => c.prefetch_count || c.global_prefetch_count },
        { title: "Consumers", num: true, cell: (c) => c.consumer_count },
        { title: "Unacked", num: true, cell: (c) => c.messages_unacknowledged },
      ], data));
    });
  },
};

// ------------------------------------------------------------------------------ routing, login

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const page = document.getElementById("page");
  if (!auth) { showLogin(); return; }
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = parts[0] && pages[parts[0]] ? parts[0] : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name || (name === "queue" && a.dataset.page === "queues"));
  try { await pages[name](page, ...parts.slice(1)); } catch (e) { status(e.message, false); }
}

function showLogin() {
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  replace(document.getElementById("page"));
  replace(document.getElementById("who"));
}

function logout() {
  auth = null;
  sessionStorage.removeItem("leveret-auth");
  if (timer) { clearInterval(timer); timer = null; }
  showLogin();
}

document.getElementById("login").addEventListener("submit", action(async (form) => {
  const v = formValues(form);
  auth = btoa(unescape(encodeURIComponent(`${v.user}:${v.password}`)));
  try {
    const me = await api("GET", "/whoami");
    sessionStorage.setItem("leveret-auth", auth);
    form.hidden = true;
    document.getElementById("logout").hidden = false;
    replace(document.getElementById("who"), `${me.name} (${me.tags.join(", ")})`);
    replace(document.getElementById("login-error"));
    route();
  } catch (e) {
    auth = null;
    replace(document.getElementById("login-error"), e.message);
  }
}));
document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", route);
if (auth) {
  document.getElementById("logout").hidden = false;
  api("GET", "/whoami").then((me) => replace(document.getElementById("who"), `${me.name} (${me.tags.join(", ")})`)).catch(() => {});
}
route();
