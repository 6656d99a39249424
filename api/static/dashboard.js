// The operators' dashboard of the mase service: plain JavaScript, no build step.
// Every API string is inserted as text (textContent / text nodes), never as HTML.
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "mase.operatorToken";
  const SCENARIO_KEY = "mase.scenarioId";
  const METHODS = ["naive", "recon", "gen-recon", "gen-recon-cf", "difference-reward", "wlu", "dpp",
                   "considerate", "shapley", "exchange"];
  const DEFAULT_METHOD = "gen-recon-cf";
  const DEFAULT_MAP = "salp-demo";
  const RUN_POLL_MS = 500;
  const MONITOR_POLL_MS = 3000;
  const BLAME_MAX_ROBOTS = 30;
  const ROBOT_COLORS = ["#2563eb", "#dc2626", "#059669", "#7c3aed", "#d97706", "#0891b2", "#be185d",
                        "#4d7c0f", "#9a3412", "#475569"];
  const ZONE_COLORS = ["#f59e0b", "#38bdf8", "#a3e635", "#f472b6", "#a78bfa", "#fb923c", "#34d399", "#facc15"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WALLS = "#X"; // wall symbols: salp and warehouse rock/racks, Overcooked counters
  const LABEL_SPOTS = [[0, -0.5], [0, 0.62], [-0.62, 0.06], [0.62, 0.06], [-0.5, -0.5], [0.5, -0.5], [-0.5, 0.62], [0.5, 0.62]];

  const state = {
    token: null,
    maps: [],
    scenarios: [],
    scenarioId: null,
    map: null,
    runs: [],
    selectedRunId: null,
    liveRunId: null,
    liveWasActive: false,
    runTimer: null,
    monitorTimer: null,
    versions: [],
    compareIds: new Set(),
  };

  // -- small DOM helpers -------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  function build(node, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const s = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  const isBlank = (v) => v === null || v === undefined;
  const fmt = (v, digits = 3) => (isBlank(v) ? "—" : Number(v).toFixed(digits));
  const pct = (v) => (isBlank(v) ? "—" : `${(v * 100).toFixed(1)}%`);
  const when = (iso) => (iso ? `${iso.replace("T", " ").slice(0, 19)} UTC` : "—");
  const robotColor = (i) => ROBOT_COLORS[i % ROBOT_COLORS.length];
  const zoneColor = (i) => ZONE_COLORS[i % ZONE_COLORS.length];

  function change(before, after) {
    if (isBlank(before) || isBlank(after)) return "—";
    if (before === 0) return after === 0 ? "±0%" : "new NSE";
    const c = ((after - before) / before) * 100;
    return `${c > 0 ? "+" : c < 0 ? "−" : "±"}${Math.abs(c).toFixed(0)}%`;
  }

  /** A number from an input, null when empty, or the raw text so that the API explains what is wrong. */
  function numberOrNull(input) {
    const raw = input.value.trim();
    if (raw === "") return null;
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;
  }

  // -- API access and errors ---------------------------------------------------------------
  function locText(loc) {
    const parts = (loc || []).filter((p, i) => !(i === 0 && ["body", "query", "path"].includes(p)));
    return parts.reduce((text, p) => (typeof p === "number" ? `${text}[${p}]` : text ? `${text}.${p}` : String(p)), "");
  }

  function messagesOf(detail) {
    if (isBlank(detail) || detail === "") return [];
    if (typeof detail === "string") return [detail];
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        if (typeof d === "string") return d;
        const where = locText(d.loc);
        return where ? `${where}: ${d.msg}` : String(d.msg);
      });
    }
    return [JSON.stringify(detail)];
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(messagesOf(detail).join("; ") || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
    }
    get messages() {
      const m = messagesOf(this.detail);
      return m.length ? m : [this.message];
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      throw new ApiError(0, `the service does not answer (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (!response.ok) {
      const detail = data && typeof data === "object" && "detail" in data ? data.detail : data || response.statusText;
      const error = new ApiError(response.status, detail);
      if (response.status === 401 || response.status === 403) onAuthFailure(error);
      throw error;
    }
    return data;
  }

  const isAuthError = (error) => error instanceof ApiError && (error.status === 401 || error.status === 403);

  function showErrors(list, messages) {
    list.replaceChildren(...messages.map((m) => h("li", { "data-testid": "error-message" }, m)));
  }

  /** Show an error in a panel's list (or the banner); auth errors already sent the user to sign in. */
  function report(error, list) {
    if (isAuthError(error)) return;
    const messages = error instanceof ApiError ? error.messages : [String(error && error.message || error)];
    if (!(error instanceof ApiError)) console.error(error);
    if (list) showErrors(list, messages);
    else banner(messages.join("; "));
  }

  function banner(text, kind = "error") {
    $("message").className = `banner ${kind}`;
    $("message-text").textContent = text;
    $("message").hidden = false;
  }

  // -- authentication ----------------------------------------------------------------------
  /** The token of a `#token=...` fragment, which is then removed from the address bar (and history). */
  function tokenFromFragment() {
    const parts = location.hash.replace(/^#/, "").split("&").filter(Boolean);
    const found = parts.find((p) => p.startsWith("token="));
    if (found === undefined) return null;
    const rest = parts.filter((p) => p !== found).join("&");
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    let token = found.slice("token=".length);
    try { token = decodeURIComponent(token); } catch { /* keep it as typed */ }
    return token.trim() || null;
  }

  function showLogin(message, kind = "error") {
    stopPolling();
    $("app").hidden = true;
    $("login").hidden = false;
    $("sign-out").hidden = true;
    $("auth-status").textContent = "Not signed in";
    const note = $("login-error");
    note.textContent = message || "";
    note.className = kind === "error" ? "error-text" : "hint";
    note.hidden = !message;
    $("token-input").value = "";
    $("token-input").focus();
  }

  function onAuthFailure(error) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    const what = error.status === 401
      ? "The service refused the token (401)"
      : "This token may not use the dashboard (403)";
    showLogin(`${what}: ${error.message}. Sign in with an operator token.`);
  }

  async function signIn(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("auth-status").textContent = "Checking the token…";
    try {
      await loadScenarios();
    } catch (error) {
      if (!isAuthError(error)) showLogin(`Could not load the scenarios: ${error.message}`);
      return;
    }
    $("app").hidden = false;
    $("auth-status").textContent = "Signed in as operator";
    $("sign-out").hidden = false;
    loadMaps();
    const stored = Number(sessionStorage.getItem(SCENARIO_KEY));
    const ids = state.scenarios.map((sc) => sc.id);
    await selectScenario(ids.includes(stored) ? stored : ids.length ? ids[0] : null);
    startMonitor();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.scenarioId = null;
    showLogin("Signed out.", "info");
  }

  function stopPolling() {
    stopRunPolling();
    clearTimeout(state.monitorTimer);
    state.monitorTimer = null;
  }

  // -- scenarios ---------------------------------------------------------------------------
  const currentScenario = () => state.scenarios.find((sc) => sc.id === state.scenarioId) || null;

  async function loadScenarios() {
    state.scenarios = await api("GET", "/scenarios");
    renderScenarioList();
    renderScenarioHead();
  }

  async function refreshScenarios() {
    try {
      await loadScenarios();
      $("scenario-errors").replaceChildren();
    } catch (error) {
      report(error, $("scenario-errors"));
    }
  }

  function renderScenarioList() {
    const items = state.scenarios.map((sc) => {
      const selected = sc.id === state.scenarioId;
      const button = h("button", {
        type: "button", class: "scenario-item", "data-testid": "scenario-item", "data-id": sc.id,
        "aria-current": selected ? "true" : null, onclick: () => selectScenario(sc.id),
      },
      h("span", { class: "scenario-name" }, sc.name),
      h("span", { class: "scenario-sub" },
        `#${sc.id} · ${sc.domain} · ${sc.n_robots} robot${sc.n_robots === 1 ? "" : "s"} · rules v${sc.rule_version}`),
      sc.active_run_id ? h("span", { class: "badge running" }, `run #${sc.active_run_id} active`) : null);
      return h("li", {}, button);
    });
    $("scenario-list").replaceChildren(...items);
    if (!items.length) $("scenario-list").append(h("li", { class: "hint" }, "No scenarios yet."));
  }

  function renderScenarioHead() {
    const sc = currentScenario();
    if (!sc) return;
    $("scenario-title").textContent = sc.name;
    const parts = [`#${sc.id}`, `map ${sc.map_name}`, sc.domain, `${sc.n_robots} robots`, `seed ${sc.seed}`,
                   `slack ${sc.slack}`, `rules v${sc.rule_version}`,
                   sc.current_run_id ? `robots follow run #${sc.current_run_id}` : "robots follow naive policies",
                   `created ${when(sc.created_at)}`];
    $("scenario-meta").textContent = parts.join(" · ");
  }

  async function selectScenario(id) {
    stopRunPolling();
    Object.assign(state, { scenarioId: id, map: null, runs: [], selectedRunId: null, liveRunId: null, versions: [] });
    state.compareIds.clear();
    renderScenarioList();
    resetDelete();
    const view = $("scenario-view");
    if (id === null) {
      view.hidden = true;
      $("no-scenario").hidden = false;
      return;
    }
    sessionStorage.setItem(SCENARIO_KEY, String(id));
    view.hidden = false;
    $("no-scenario").hidden = true;
    renderScenarioHead();
    for (const list of view.querySelectorAll(".errors")) list.replaceChildren();
    $("run-live").hidden = true;
    $("rules-saved").hidden = true;
    $("compare-view").hidden = true;
    setReplanBusy(false);
    $("map-source").textContent = "";
    $("map-legend").replaceChildren();
    $("map-container").replaceChildren(h("p", { class: "hint" }, "Planning the fleet…"));
    renderResult(null);

    const mapLoad = loadMap(id);
    await Promise.all([mapLoad, loadRules(id, mapLoad), loadRuns(id, { selectNewest: true }), loadMonitor(id)]);
    const sc = currentScenario();
    if (state.scenarioId === id && sc && sc.active_run_id) trackRun(sc.active_run_id, true);
  }

  async function loadMaps() {
    try {
      state.maps = await api("GET", "/maps");
    } catch (error) {
      report(error, $("create-errors"));
      return;
    }
    const byDomain = new Map();
    for (const m of state.maps) {
      if (!byDomain.has(m.domain)) byDomain.set(m.domain, []);
      byDomain.get(m.domain).push(m);
    }
    const groups = [...byDomain].map(([domain, maps]) => h("optgroup", { label: domain },
      maps.map((m) => h("option", { value: m.name, selected: m.name === DEFAULT_MAP }, m.name))));
    $("create-map").replaceChildren(...groups);
  }

  async function createScenario(event) {
    event.preventDefault();
    const errors = $("create-errors");
    errors.replaceChildren();
    const name = $("create-name").value.trim();
    const body = {
      map: $("create-map").value || null,
      robots: numberOrNull($("create-robots")),
      seed: numberOrNull($("create-seed")) ?? 0,
      slack: numberOrNull($("create-slack")) ?? 100,
    };
    if (name) body.name = name;
    const button = $("create-button");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const created = await api("POST", "/scenarios", body);
      $("create-name").value = "";
      await loadScenarios();
      await selectScenario(created.id);
    } catch (error) {
      report(error, errors);
    } finally {
      button.disabled = false;
      button.textContent = "Create scenario";
    }
  }

  function resetDelete() {
    $("delete-confirm").hidden = true;
    $("delete-button").hidden = false;
    $("delete-errors").replaceChildren();
  }

  function askDelete() {
    const sc = currentScenario();
    if (!sc) return;
    $("delete-question").textContent = `Delete “${sc.name}” and all its runs?`;
    $("delete-button").hidden = true;
    $("delete-confirm").hidden = false;
  }

  async function deleteScenario() {
    const id = state.scenarioId;
    try {
      await api("DELETE", `/scenarios/${id}`);
    } catch (error) {
      resetDelete();
      report(error, $("delete-errors"));
      return;
    }
    sessionStorage.removeItem(SCENARIO_KEY);
    await refreshScenarios();
    await selectScenario(state.scenarios.length ? state.scenarios[0].id : null);
  }

  // -- the map -----------------------------------------------------------------------------
  async function loadMap(id) {
    try {
      const map = await api("GET", `/scenarios/${id}/map`);
      if (state.scenarioId !== id) return;
      state.map = map;
      renderMap();
    } catch (error) {
      if (state.scenarioId !== id) return;
      $("map-container").replaceChildren();
      report(error, $("map-errors"));
    }
  }

  function renderMap() {
    const map = state.map;
    const C = 32; // cell size in SVG units; the drawing scales to the panel
    const root = s("svg", {
      id: "map-svg", "data-testid": "map-svg", viewBox: `0 0 ${map.width * C} ${map.height * C}`,
      role: "img", class: "map",
      "aria-label": `Map ${map.width} by ${map.height} with ${map.zones.length} NSE zones and ${map.robots.length} robots`,
    });
    const defs = s("defs");
    const cells = s("g", { class: "cells" });
    let hasBlocks = false;
    const labels = s("g", { class: "cell-labels" });
    map.grid.forEach((row, y) => {
      [...row].forEach((ch, x) => {
        const open = Boolean(map.passable[y] && map.passable[y][x]);
        const kind = open ? "cell" : WALLS.includes(ch) ? "wall" : "block";
        cells.append(s("rect", { x: x * C, y: y * C, width: C, height: C, class: kind,
                                 "data-testid": kind === "wall" ? "wall" : null }));
        hasBlocks = hasBlocks || kind === "block";
        if (kind !== "wall" && !/[. 0-9]/.test(ch)) {
          labels.append(s("text", { x: x * C + C / 2, y: y * C + C / 2, class: open ? "cell-label" : "cell-label on-dark" }, ch));
        }
      });
    });

    const zones = s("g", { class: "zones" });
    map.zones.forEach((zone, i) => {
      zones.append(s("g", { "data-testid": "zone", "data-zone": zone.name, fill: zoneColor(i) },
        s("title", {}, `NSE zone ${zone.name}`),
        zone.cells.map(([x, y]) => s("rect", { x: x * C, y: y * C, width: C, height: C, class: "zone-cell" }))));
    });

    const robots = s("g", { class: "robots" });
    const lanes = Math.min(map.robots.length, 4);
    const sharing = new Map(); // robots starting on one cell get their labels around it
    map.robots.forEach((robot, i) => {
      const key = robot.start.join(",");
      const k = sharing.get(key) || 0;
      sharing.set(key, k + 1);
      const [lx, ly] = LABEL_SPOTS[k % LABEL_SPOTS.length];
      const color = robotColor(i);
      const shift = lanes > 1 ? ((i % lanes) - (lanes - 1) / 2) * C * 0.14 : 0;
      const at = ([x, y]) => [x * C + C / 2 + shift, y * C + C / 2 + shift];
      defs.append(s("marker", { id: `arrow-${i}`, viewBox: "0 0 10 10", refX: 7, refY: 5, markerWidth: 4,
                                markerHeight: 4, orient: "auto" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: color })));
      const [sx, sy] = at(robot.start);
      const group = s("g", { class: "robot", "data-testid": "robot-path", "data-robot": robot.id },
        s("title", {}, `${robot.id}: starts at (${robot.start.join(", ")}), ${robot.path.length} cells planned`));
      if (robot.path.length > 1) {
        group.append(s("polyline", {
          points: robot.path.map((cell) => at(cell).join(",")).join(" "), stroke: color, class: "path",
          "marker-end": `url(#arrow-${i})`, "data-cells": robot.path.length,
        }));
      }
      group.append(s("circle", { cx: sx, cy: sy, r: C * 0.3, fill: color, class: "start", "data-testid": "robot-start" }));
      group.append(s("text", { x: sx + lx * C, y: sy + ly * C, class: "robot-label", fill: color }, robot.id));
      robots.append(group);
    });

    root.append(defs, cells, zones, labels, robots);
    $("map-container").replaceChildren(root);
    $("map-errors").replaceChildren();

    const source = $("map-source");
    source.textContent = map.run_id ? `paths under run #${map.run_id}` : "paths under the naive policies";
    source.dataset.runId = map.run_id ?? "";

    const legend = [
      h("li", {}, h("span", { class: "swatch wall" }), "wall"),
      hasBlocks ? h("li", {}, h("span", { class: "swatch block" }), "fixture (map symbol)") : null,
      ...map.zones.map((zone, i) => h("li", { "data-testid": "legend-zone", "data-zone": zone.name },
        h("span", { class: "swatch", style: `background:${zoneColor(i)}` }), `NSE zone ${zone.name}`)),
      ...map.robots.slice(0, 20).map((robot, i) => h("li", { "data-testid": "legend-robot" },
        h("span", { class: "swatch line", style: `background:${robotColor(i)}` }), robot.id)),
    ];
    if (map.robots.length > 20) legend.push(h("li", { class: "hint" }, `and ${map.robots.length - 20} more robots`));
    $("map-legend").replaceChildren(...legend.filter(Boolean));
  }

  // -- runs --------------------------------------------------------------------------------
  async function loadRuns(id, { selectNewest = false } = {}) {
    try {
      const runs = await api("GET", `/scenarios/${id}/runs`);
      if (state.scenarioId !== id) return;
      state.runs = runs;
      for (const runId of [...state.compareIds]) if (!runs.some((r) => r.id === runId)) state.compareIds.delete(runId);
      if (selectNewest || !runs.some((r) => r.id === state.selectedRunId)) {
        const done = runs.filter((r) => r.status === "succeeded");
        const pick = done.length ? done[done.length - 1] : runs[runs.length - 1];
        state.selectedRunId = pick ? pick.id : null;
        if (pick) showRun(pick.id);
      }
      renderRuns();
      $("runs-errors").replaceChildren();
    } catch (error) {
      if (state.scenarioId === id) report(error, $("runs-errors"));
    }
  }

  function numberCell(value, text, testid) {
    return h("td", { class: "num", "data-testid": testid, "data-value": isBlank(value) ? "" : String(value) }, text);
  }

  function statusBadge(run) {
    const active = run.status === "queued" || run.status === "running";
    return h("span", { class: `status ${run.status}`, "data-testid": "run-status" },
      active && run.progress > 0 ? `${run.status} ${Math.round(run.progress * 100)}%` : run.status);
  }

  function renderRuns() {
    const rows = state.runs.map((run) => {
      const sm = run.summary;
      const checkbox = h("input", {
        type: "checkbox", "aria-label": `Compare run ${run.id}`, "data-testid": "run-compare",
        checked: state.compareIds.has(run.id),
        onchange: (event) => {
          if (event.target.checked) state.compareIds.add(run.id); else state.compareIds.delete(run.id);
          updateCompareButton();
        },
      });
      checkbox.addEventListener("click", (event) => event.stopPropagation());
      return h("tr", {
        "data-testid": "run-row", "data-run-id": run.id, class: "clickable",
        "aria-selected": run.id === state.selectedRunId ? "true" : "false",
        title: run.error ? `${run.status}: ${run.error}` : "Show this run's result",
        onclick: () => selectRun(run.id),
      },
      h("td", { class: "center" }, checkbox),
      h("td", { "data-testid": "run-id" }, `#${run.id}`),
      h("td", { "data-testid": "run-method", class: "nowrap" }, run.method),
      numberCell(run.params.update_fraction, String(run.params.update_fraction), "run-fraction"),
      numberCell(run.params.rounds, String(run.params.rounds), "run-rounds"),
      numberCell(run.rule_version, `v${run.rule_version}`, "run-rule-version"),
      h("td", {}, statusBadge(run)),
      numberCell(sm && sm.nse_before, fmt(sm && sm.nse_before), "run-nse-before"),
      numberCell(sm && sm.nse_after, fmt(sm && sm.nse_after), "run-nse-after"),
      h("td", { class: "num" }, sm ? change(sm.nse_before, sm.nse_after) : "—"),
      numberCell(sm && sm.nse_state_rate_before, pct(sm && sm.nse_state_rate_before), "run-rate-before"),
      numberCell(sm && sm.nse_state_rate_after, pct(sm && sm.nse_state_rate_after), "run-rate-after"),
      numberCell(sm && sm.updated.length, sm ? String(sm.updated.length) : "—", "run-updated"),
      h("td", { class: "nowrap", title: when(run.finished_at) }, run.finished_at ? when(run.finished_at).slice(11, 19) : "—"));
    });
    $("runs-body").replaceChildren(...rows);
    $("runs-empty").hidden = state.runs.length > 0;
    $("runs-table").hidden = state.runs.length === 0;
    updateCompareButton();
    renderNseChart();
  }

  function updateCompareButton() {
    const n = state.compareIds.size;
    const button = $("compare-button");
    button.disabled = n < 2 || n > 20;
    button.textContent = n ? `Compare selected (${n})` : "Compare selected";
  }

  /** A grouped bar chart: NSE penalty before and after, per succeeded run. */
  function renderNseChart() {
    const box = $("nse-chart");
    const runs = state.runs.filter((r) => r.status === "succeeded" && r.summary);
    if (!runs.length) {
      box.replaceChildren();
      return;
    }
    const top = Math.max(...runs.flatMap((r) => [r.summary.nse_before, r.summary.nse_after]), 1e-9);
    const group = 96, bar = 28, left = 52, plotH = 150, base = 20 + plotH;
    const width = Math.max(320, left + runs.length * group + 150);
    const y = (v) => base - (v / top) * plotH;
    const svg = s("svg", { viewBox: `0 0 ${width} ${base + 34}`, width, height: base + 34, class: "bar-chart", role: "img",
                           "aria-label": "NSE penalty before and after mitigation per run" },
      s("line", { x1: left, x2: left + runs.length * group, y1: base, y2: base, class: "axis" }),
      s("text", { x: left - 6, y: base, class: "tick end" }, "0"),
      s("text", { x: left - 6, y: 24, class: "tick end" }, fmt(top, 2)),
      s("line", { x1: left, x2: left + runs.length * group, y1: 20, y2: 20, class: "gridline" }));
    runs.forEach((run, i) => {
      const x = left + i * group + (group - 2 * bar - 2) / 2;
      const { nse_before: b, nse_after: a } = run.summary;
      svg.append(s("g", { "data-testid": "nse-chart-run", "data-run-id": run.id, "data-before": b, "data-after": a },
        s("title", {}, `run #${run.id} (${run.method}): NSE ${fmt(b)} before, ${fmt(a)} after`),
        s("rect", { x, y: y(b), width: bar, height: base - y(b), class: "before" }),
        s("rect", { x: x + bar + 2, y: y(a), width: bar, height: base - y(a), class: "after" }),
        s("text", { x: x + bar + 1, y: base + 14, class: "tick middle" }, `#${run.id}`),
        s("text", { x: x + bar + 1, y: base + 27, class: "tick middle small" }, run.method)));
    });
    const lx = left + runs.length * group + 16;
    svg.append(s("rect", { x: lx, y: 30, width: 12, height: 12, class: "before" }),
      s("text", { x: lx + 18, y: 40, class: "tick" }, "NSE before"),
      s("rect", { x: lx, y: 50, width: 12, height: 12, class: "after" }),
      s("text", { x: lx + 18, y: 60, class: "tick" }, "NSE after"));
    box.replaceChildren(h("h3", {}, "NSE penalty per run"), svg);
  }

  function selectRun(runId) {
    state.selectedRunId = runId;
    for (const row of $("runs-body").children) {
      row.setAttribute("aria-selected", String(Number(row.dataset.runId) === runId));
    }
    showRun(runId);
    const run = state.runs.find((r) => r.id === runId);
    // a failed or interrupted run goes to the live panel, where it can be restarted
    if (run && ["failed", "interrupted"].includes(run.status) && state.liveRunId !== runId) trackRun(runId);
  }

  async function showRun(runId) {
    const id = state.scenarioId;
    try {
      const run = await api("GET", `/runs/${runId}`);
      if (state.scenarioId !== id || state.selectedRunId !== runId) return;
      renderResult(run);
      $("result-errors").replaceChildren();
    } catch (error) {
      if (state.scenarioId === id) report(error, $("result-errors"));
    }
  }

  function renderResult(run) {
    $("result-empty").hidden = Boolean(run);
    $("result-body").hidden = !run;
    $("result-run").textContent = run ? `run #${run.id} · ${run.method} · ${run.status}` : "";
    $("result-panel").dataset.runId = run ? run.id : "";
    if (!run) return;
    const sm = run.summary;
    const put = (id, value, text) => {
      $(id).textContent = text;
      $(id).dataset.value = isBlank(value) ? "" : String(value);
    };
    put("nse-before", sm && sm.nse_before, fmt(sm && sm.nse_before));
    put("nse-after", sm && sm.nse_after, fmt(sm && sm.nse_after));
    put("rate-before", sm && sm.nse_state_rate_before, pct(sm && sm.nse_state_rate_before));
    put("rate-after", sm && sm.nse_state_rate_after, pct(sm && sm.nse_state_rate_after));
    $("nse-change").textContent = sm ? change(sm.nse_before, sm.nse_after) : "—";
    $("nse-change").className = `value ${sm && sm.nse_after < sm.nse_before ? "good" : sm && sm.nse_after > sm.nse_before ? "bad" : ""}`;
    if (sm) {
      const seconds = Object.values(sm.seconds || {}).reduce((a, b) => a + b, 0);
      $("result-extra").textContent =
        `${sm.updated.length} of ${run.robots.length} robots replanned · ${sm.rounds} round${sm.rounds === 1 ? "" : "s"} · ${seconds.toFixed(1)} s`;
    } else {
      $("result-extra").textContent = run.error ? `${run.status}: ${run.error}` : `${run.status} (${run.phase})`;
    }
    renderBlame(run);
  }

  /** Horizontal bar chart of each robot's blame; robots that replanned are highlighted. */
  function renderBlame(run) {
    const box = $("blame-chart");
    if (!run.robots.length) {
      box.replaceChildren(h("p", { class: "hint" }, run.status === "succeeded" ? "No robots." : "Blame appears when the run succeeds."));
      return;
    }
    const sorted = run.robots.length > BLAME_MAX_ROBOTS
      ? [...run.robots].sort((a, b) => b.blame - a.blame).slice(0, BLAME_MAX_ROBOTS) : run.robots;
    const top = Math.max(...sorted.map((r) => r.blame), 0);
    const rowH = 24, label = 64, barW = 260, width = label + barW + 150;
    const height = sorted.length * rowH + 8;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "bar-chart blame",
                           role: "img", "aria-label": "Blame per robot" });
    sorted.forEach((robot, i) => {
      const y = 4 + i * rowH;
      const w = top > 0 ? (robot.blame / top) * barW : 0;
      svg.append(s("g", {
        "data-testid": "blame-bar", "data-robot": robot.id, "data-value": String(robot.blame),
        "data-updated": String(robot.updated), class: robot.updated ? "updated" : "kept",
      },
      s("title", {}, `${robot.id}: blame ${fmt(robot.blame, 4)}, task regret ${fmt(robot.task_regret, 4)} of slack ${robot.slack}` +
        (robot.updated ? ", replanned" : "")),
      s("text", { x: label - 8, y: y + rowH / 2, class: "tick end" }, robot.id),
      s("rect", { x: label, y: y + 3, width: barW, height: rowH - 6, class: "track" }),
      s("rect", { x: label, y: y + 3, width: Math.max(w, top > 0 && robot.blame > 0 ? 1 : 0), height: rowH - 6, class: "bar" }),
      s("text", { x: label + barW + 8, y: y + rowH / 2, class: "tick" },
        `${fmt(robot.blame)}${robot.updated ? "  ● replanned" : ""}`)));
    });
    const legend = h("p", { class: "chart-legend" },
      h("span", { class: "swatch updated" }), "replanned ",
      h("span", { class: "swatch kept" }), "kept its policy",
      run.robots.length > BLAME_MAX_ROBOTS ? ` · the ${BLAME_MAX_ROBOTS} most blamed of ${run.robots.length} robots` : "",
      top === 0 ? " · no robot was blamed" : "");
    box.replaceChildren(svg, legend);
  }

  async function compareRuns() {
    const ids = [...state.compareIds].sort((a, b) => a - b);
    const query = ids.map((id) => `ids=${encodeURIComponent(id)}`).join("&");
    const view = $("compare-view");
    try {
      const comparison = await api("GET", `/runs/compare?${query}`);
      renderCompare(comparison);
      $("runs-errors").replaceChildren();
    } catch (error) {
      view.hidden = true;
      report(error, $("runs-errors"));
    }
  }

  function renderCompare({ runs, best_run_id: best }) {
    const head = h("tr", {}, h("th", {}, "Run"), h("th", {}, "Method"), h("th", { class: "num" }, "f"),
      h("th", { class: "num" }, "NSE before"), h("th", { class: "num" }, "NSE after"), h("th", { class: "num" }, "Change"),
      h("th", { class: "num" }, "Rate before"), h("th", { class: "num" }, "Rate after"),
      h("th", { class: "num" }, "Task regret (sum)"), h("th", {}, "Replanned robots"));
    const rows = runs.map((run) => {
      const sm = run.summary;
      const regret = run.robots.reduce((a, r) => a + r.task_regret, 0);
      return h("tr", { "data-testid": "compare-row", "data-run-id": run.id, class: run.id === best ? "best" : null },
        h("td", {}, `#${run.id}`, run.id === best ? h("span", { class: "badge best", "data-testid": "best-run" }, "lowest NSE after") : null),
        h("td", {}, run.method),
        h("td", { class: "num" }, String(run.params.update_fraction)),
        numberCell(sm && sm.nse_before, fmt(sm && sm.nse_before), "compare-nse-before"),
        numberCell(sm && sm.nse_after, fmt(sm && sm.nse_after), "compare-nse-after"),
        h("td", { class: "num" }, sm ? change(sm.nse_before, sm.nse_after) : run.status),
        h("td", { class: "num" }, pct(sm && sm.nse_state_rate_before)),
        h("td", { class: "num" }, pct(sm && sm.nse_state_rate_after)),
        h("td", { class: "num" }, sm ? fmt(regret) : "—"),
        h("td", {}, sm ? sm.updated.join(", ") || "none" : "—"));
    });
    const view = $("compare-view");
    view.replaceChildren(
      h("div", { class: "card-head" }, h("h3", {}, `Comparing runs ${runs.map((r) => `#${r.id}`).join(", ")}`),
        h("button", { type: "button", class: "secondary small", onclick: () => { view.hidden = true; } }, "Close")),
      h("div", { class: "table-scroll" }, h("table", { class: "data", "data-testid": "compare-table" },
        h("thead", {}, head), h("tbody", {}, rows))));
    view.hidden = false;
  }

  // -- replanning with live progress -------------------------------------------------------
  function setReplanBusy(busy) {
    const button = $("replan-button");
    button.disabled = busy;
    button.textContent = busy ? "Replanning…" : "Replan";
  }

  async function submitReplan(event) {
    event.preventDefault();
    const id = state.scenarioId;
    $("replan-errors").replaceChildren();
    const body = { method: $("method").value, update_fraction: numberOrNull($("update-fraction")),
                   rounds: numberOrNull($("rounds")) };
    setReplanBusy(true);
    try {
      const run = await api("POST", `/scenarios/${id}/runs`, body);
      if (state.scenarioId !== id) return;
      state.selectedRunId = run.id;
      trackRun(run.id, true);
      await loadRuns(id);
      renderResult({ ...run, robots: [] });
    } catch (error) {
      setReplanBusy(false);
      report(error, $("replan-errors"));
    }
  }

  function stopRunPolling() {
    clearTimeout(state.runTimer);
    state.runTimer = null;
  }

  /** Follow one run in the live panel, polling while it is queued or running. */
  function trackRun(runId, active = false) {
    stopRunPolling();
    state.liveRunId = runId;
    state.liveWasActive = active; // refresh the map, runs and result when an active run ends
    $("run-error").hidden = true;
    $("restart-button").hidden = true;
    pollRun(runId, state.scenarioId);
  }

  async function pollRun(runId, scenarioId) {
    const current = () => state.liveRunId === runId && state.scenarioId === scenarioId;
    let run;
    try {
      run = await api("GET", `/runs/${runId}`);
    } catch (error) {
      if (!current() || isAuthError(error)) return;
      report(error, $("replan-errors"));
      if (error.status === 0 || error.status >= 500) state.runTimer = setTimeout(() => pollRun(runId, scenarioId), 2000);
      else setReplanBusy(false);
      return;
    }
    if (!current()) return;
    $("replan-errors").replaceChildren();
    renderLive(run);
    if (run.status === "queued" || run.status === "running") {
      state.liveWasActive = true;
      setReplanBusy(true);
      state.runTimer = setTimeout(() => pollRun(runId, scenarioId), RUN_POLL_MS);
      return;
    }
    setReplanBusy(false);
    if (state.liveWasActive) await runFinished(run, scenarioId);
  }

  function renderLive(run) {
    $("run-live").hidden = false;
    $("run-live").dataset.runId = run.id;
    $("run-live").dataset.status = run.status;
    $("run-live-title").textContent = `Run #${run.id} · ${run.method} · f ${run.params.update_fraction}` +
      ` · ${run.params.rounds} round${run.params.rounds === 1 ? "" : "s"}` + (run.attempts > 1 ? ` · attempt ${run.attempts}` : "");
    const status = $("run-status");
    status.textContent = run.status;
    status.className = `status ${run.status}`;
    const percent = Math.round(Math.min(Math.max(run.progress, 0), 1) * 100);
    $("run-progress-bar").style.width = `${percent}%`;
    $("run-progress-bar").className = `progress-bar ${run.status}`;
    $("run-progress").setAttribute("aria-valuenow", String(percent));
    $("run-phase").textContent = run.phase;
    $("run-percent").textContent = `${percent}%`;
    const failed = run.status === "failed" || run.status === "interrupted";
    $("run-error").textContent = failed ? `Run ${run.status}: ${run.error || "no reason given"}` : "";
    $("run-error").hidden = !failed;
    $("restart-button").hidden = !failed;
    // keep the runs table's status cell in step without redrawing the table
    const row = $("runs-body").querySelector(`tr[data-run-id="${run.id}"]`);
    const known = state.runs.find((r) => r.id === run.id);
    if (row && known) {
      Object.assign(known, { status: run.status, progress: run.progress, phase: run.phase });
      row.querySelector("[data-testid=run-status]").replaceWith(statusBadge(known));
    }
  }

  async function runFinished(run, scenarioId) {
    if (run.status === "succeeded") state.selectedRunId = run.id;
    await Promise.all([loadRuns(scenarioId), refreshScenarios(),
                       run.status === "succeeded" ? loadMap(scenarioId) : null]);
    if (state.scenarioId === scenarioId && state.selectedRunId === run.id) renderResult(run);
  }

  async function restartRun() {
    const runId = state.liveRunId;
    if (!runId) return;
    $("replan-errors").replaceChildren();
    try {
      await api("POST", `/runs/${runId}/restart`);
    } catch (error) {
      report(error, $("replan-errors"));
      return;
    }
    state.selectedRunId = runId;
    trackRun(runId, true);
  }

  // -- live monitor ------------------------------------------------------------------------
  function startMonitor() {
    clearTimeout(state.monitorTimer);
    const tick = async () => {
      if (state.token && state.scenarioId !== null && !document.hidden) await loadMonitor(state.scenarioId);
      if (state.token) state.monitorTimer = setTimeout(tick, MONITOR_POLL_MS);
    };
    state.monitorTimer = setTimeout(tick, MONITOR_POLL_MS);
  }

  async function loadMonitor(id) {
    let monitor;
    try {
      monitor = await api("GET", `/scenarios/${id}/monitor`);
    } catch (error) {
      if (state.scenarioId === id) report(error, $("monitor-errors"));
      return;
    }
    if (state.scenarioId !== id) return;
    $("monitor-errors").replaceChildren();
    const sc = currentScenario();
    const put = (elementId, value, text) => {
      $(elementId).textContent = text;
      $(elementId).dataset.value = isBlank(value) ? "" : String(value);
    };
    put("monitor-penalty", monitor.current_penalty, fmt(monitor.current_penalty));
    $("monitor-penalty").classList.toggle("bad", monitor.current_penalty > 0);
    put("monitor-rate", monitor.nse_state_rate, pct(monitor.nse_state_rate));
    put("monitor-observations", monitor.observations, String(monitor.observations));
    put("monitor-robots", monitor.reporting_robots.length,
      `${monitor.reporting_robots.length}${sc ? ` of ${sc.n_robots}` : ""}`);
    $("monitor-robots").title = monitor.reporting_robots.join(", ");
    const violating = new Set(monitor.zones_in_violation);
    const rows = Object.entries(monitor.zone_penalties).map(([zone, penalty]) =>
      h("tr", { "data-testid": "monitor-zone", "data-zone": zone },
        h("td", {}, zone),
        numberCell(penalty, fmt(penalty), "monitor-zone-penalty"),
        h("td", {}, violating.has(zone)
          ? h("span", { class: "status failed" }, "violation")
          : h("span", { class: "status succeeded" }, "ok"))));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 3, class: "hint" }, "No NSE zones.")));
    $("monitor-zones").replaceChildren(...rows);
    $("monitor-updated").textContent =
      `rules v${monitor.rule_version} · updated ${new Date().toLocaleTimeString()} · every ${MONITOR_POLL_MS / 1000} s`;
  }

  // -- the rule editor ---------------------------------------------------------------------
  async function loadRules(id, mapLoad) {
    try {
      const versions = await api("GET", `/scenarios/${id}/rules`);
      await mapLoad; // the zone choices come from the map
      if (state.scenarioId !== id) return;
      state.versions = versions.sort((a, b) => a.version - b.version);
      renderRuleEditor(state.versions[state.versions.length - 1]);
      renderVersions();
    } catch (error) {
      if (state.scenarioId === id) report(error, $("rules-errors"));
    }
  }

  function zoneNames() {
    const names = new Set(state.map ? state.map.zones.map((z) => z.name) : []);
    for (const v of state.versions) for (const r of v.rules) if (r.zone) names.add(r.zone);
    return [...names];
  }

  function renderRuleEditor(version) {
    $("rules-body").replaceChildren();
    if (!version) return;
    for (const rule of version.rules) addRuleRow(rule);
    $("min-count").value = version.min_count;
    $("rules-note").value = "";
    $("rules-base").textContent = `editing from version ${version.version}`;
    $("rules-base").dataset.version = version.version;
    $("rules-errors").replaceChildren();
  }

  function addRuleRow(rule) {
    const body = $("rules-body");
    const first = body.querySelector(".rule-feature");
    const r = rule || { zone: null, feature: first ? first.value : "", value: "", weight: 1, sensitivity: 1 };
    const zones = h("select", { class: "rule-zone", "data-field": "zone", "aria-label": "Zone" },
      h("option", { value: "", selected: !r.zone }, "every zone (*)"),
      zoneNames().map((name) => h("option", { value: name, selected: r.zone === name }, name)));
    const input = (field, value, extra) => h("input", {
      class: `rule-${field}`, "data-field": field, "aria-label": field, value: isBlank(value) ? "" : String(value), ...extra,
    });
    const row = h("tr", { "data-testid": "rule-row" },
      h("td", {}, zones),
      h("td", {}, input("feature", r.feature, { type: "text", maxlength: 100 })),
      h("td", {}, input("value", r.value, { type: "text", maxlength: 100 })),
      h("td", {}, input("weight", r.weight, { type: "number", step: "any" })),
      h("td", {}, input("sensitivity", r.sensitivity, { type: "number", step: "any" })),
      h("td", {}, h("button", {
        type: "button", class: "secondary small", "data-testid": "remove-rule", "aria-label": "Remove this rule",
        onclick: () => row.remove(),
      }, "Remove")));
    body.append(row);
    return row;
  }

  function collectRules() {
    return [...$("rules-body").querySelectorAll("tr")].map((row) => {
      const field = (name) => row.querySelector(`[data-field="${name}"]`);
      return {
        zone: field("zone").value === "" ? null : field("zone").value,
        feature: field("feature").value.trim(),
        value: field("value").value.trim(),
        weight: numberOrNull(field("weight")),
        sensitivity: numberOrNull(field("sensitivity")),
      };
    });
  }

  /** Mark the inputs that the API's 422 details point at. */
  function markInvalid(detail) {
    for (const node of $("rules-form").querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    if (!Array.isArray(detail)) return;
    const rows = $("rules-body").querySelectorAll("tr");
    for (const d of detail) {
      const loc = (d && d.loc) || [];
      if (loc[1] === "rules" && typeof loc[2] === "number" && rows[loc[2]]) {
        const target = loc[3] ? rows[loc[2]].querySelector(`[data-field="${loc[3]}"]`) : null;
        (target || rows[loc[2]]).setAttribute("aria-invalid", "true");
      } else if (loc[1] === "min_count") {
        $("min-count").setAttribute("aria-invalid", "true");
      }
    }
  }

  async function saveRules(event) {
    event.preventDefault();
    const id = state.scenarioId;
    $("rules-errors").replaceChildren();
    $("rules-saved").hidden = true;
    markInvalid(null);
    const body = { rules: collectRules(), min_count: numberOrNull($("min-count")), note: $("rules-note").value };
    const button = $("save-rules");
    button.disabled = true;
    try {
      const version = await api("POST", `/scenarios/${id}/rules`, body);
      if (state.scenarioId !== id) return;
      state.versions.push(version);
      renderRuleEditor(version);
      renderVersions();
      $("rules-saved").textContent = `Saved as version ${version.version}; new runs use it.`;
      $("rules-saved").hidden = false;
      refreshScenarios();
      loadMonitor(id);
    } catch (error) {
      report(error, $("rules-errors"));
      if (error instanceof ApiError) markInvalid(error.detail);
    } finally {
      button.disabled = false;
    }
  }

  function renderVersions() {
    const newest = state.versions.length ? state.versions[state.versions.length - 1].version : null;
    const items = [...state.versions].reverse().map((v) => h("details", {
      class: "version", "data-testid": "rule-version", "data-version": v.version, open: v.version === newest,
    },
    h("summary", {},
      h("strong", {}, `v${v.version}`), v.version === newest ? h("span", { class: "badge" }, "newest") : null,
      h("span", { class: "meta" }, ` ${when(v.created_at)} · ${v.min_count} robots for an NSE`),
      v.note ? h("span", { class: "note", "data-testid": "rule-version-note" }, ` — ${v.note}`) : null),
    h("table", { class: "data compact" },
      h("thead", {}, h("tr", {}, ["Zone", "Feature", "Value", "Weight", "Sensitivity"].map((t) => h("th", {}, t)))),
      h("tbody", {}, v.rules.length
        ? v.rules.map((r) => h("tr", {}, h("td", {}, r.zone ?? "every zone"), h("td", {}, r.feature), h("td", {}, r.value),
          h("td", { class: "num" }, String(r.weight)), h("td", { class: "num" }, String(r.sensitivity))))
        : h("tr", {}, h("td", { colspan: 5, class: "hint" }, "no rules: no NSE penalty")))),
    h("button", { type: "button", class: "secondary small", onclick: () => renderRuleEditor(v) }, "Edit from this version")));
    $("rule-versions").replaceChildren(...items);
  }

  // -- start -------------------------------------------------------------------------------
  function init() {
    $("method").replaceChildren(...METHODS.map((m) => h("option", { value: m, selected: m === DEFAULT_METHOD }, m)));
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", signOut);
    $("message-close").addEventListener("click", () => { $("message").hidden = true; });
    $("refresh-scenarios").addEventListener("click", refreshScenarios);
    $("create-form").addEventListener("submit", createScenario);
    $("delete-button").addEventListener("click", askDelete);
    $("delete-cancel").addEventListener("click", resetDelete);
    $("delete-confirm-button").addEventListener("click", deleteScenario);
    $("replan-form").addEventListener("submit", submitReplan);
    $("restart-button").addEventListener("click", restartRun);
    $("compare-button").addEventListener("click", compareRuns);
    $("add-rule").addEventListener("click", () => addRuleRow(null));
    $("rules-form").addEventListener("submit", saveRules);
    window.addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) signIn(token);
    });
    window.addEventListener("unhandledrejection", (event) => report(event.reason));

    const token = tokenFromFragment() || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token); else showLogin("");
  }

  init();
})();
