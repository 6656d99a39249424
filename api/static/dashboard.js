// The operators' dashboard of the mase service: plain JavaScript, no build step.
// Every API string is inserted as text (textContent / text nodes), never as HTML.
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "mase.operatorToken";
  const SCENARIO_KEY = "mase.scenarioId";
  const DEFAULT_METHOD = "gen-recon-cf";
  const DEFAULT_MAP = "salp-demo";
  const RUN_POLL_MS = 500;
  const MONITOR_POLL_MS = 3000;
  const BLAME_MAX_ROBOTS = 30;
  // 12 colours that tell apart; at most PATH_LIMIT paths are drawn at once, each with its own
  const ROBOT_COLORS = ["#2563eb", "#dc2626", "#059669", "#7c3aed", "#d97706", "#0891b2", "#be185d",
                        "#4d7c0f", "#9a3412", "#475569", "#c026d3", "#0f766e"];
  const PATH_LIMIT = ROBOT_COLORS.length;
  const FALLBACK_POLL_MS = 3000; // while the push channel is down
  const RECONNECT_MS = 2000;
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
    deployDefaultFor: null, // "scenario:auto_deploy" the replan box was last defaulted for
    runEvents: {}, // run id -> pushed events seen: an answer fetched before one of them is older
    runTimer: null,
    monitorTimer: null,
    versions: [],
    compareIds: new Set(),
    methods: [],
    reports: new Map(), // robot -> its latest report (from the push channel or the monitor)
    monitor: null,
    alerts: new Map(), // open alerts by id
    history: [],
    explained: null, // the selected run's explanation
    focus: new Set(), // robots whose paths are drawn (more than PATH_LIMIT robots)
    highlight: null, // the robot highlighted on the map
    events: null, // the EventSource
    live: false, // the push channel is delivering
    fallbackTimer: null,
    reconnectTimer: null,
    streamFor: null, // scenario id of the push channel
    me: null,
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
  const age = (iso) => {
    if (!iso) return "never";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 60) return `${seconds.toFixed(0)} s ago`;
    if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min ago`;
    return `${(seconds / 3600).toFixed(1)} h ago`;
  };
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

  // a task budget: "10%" of each robot's task cost, or a number of task-value units
  function budgetOrDefault(input) {
    const raw = input.value.trim();
    if (raw === "") return "10%";
    if (raw.endsWith("%")) return raw.replace(/\s+/g, "");
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
        if (d.type === "map_error" && d.line) { // a map file's error: say where, as an editor would
          const file = $("create-file").files[0];
          return `${file ? file.name : "the map"}, line ${d.line}${d.column ? `, column ${d.column}` : ""}: ${d.msg}`;
        }
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
      error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
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
    api("GET", "/me").then((me) => {
      state.me = me;
      $("auth-status").textContent = `Signed in as operator${me.name ? ` ${me.name}` : ""}`;
      $("auth-status").dataset.name = me.name || "";
    }).catch(() => {});
    loadMaps();
    loadMethods();
    const stored = Number(sessionStorage.getItem(SCENARIO_KEY));
    const ids = state.scenarios.map((sc) => sc.id);
    await selectScenario(ids.includes(stored) ? stored : ids.length ? ids[0] : null);
    startMonitor();
  }

  function signOut() {
    closeEvents();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.scenarioId = null;
    showLogin("Signed out.", "info");
  }

  function stopPolling() {
    stopRunPolling();
    clearTimeout(state.monitorTimer);
    state.monitorTimer = null;
    closeEvents();
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
                   `task budget ${sc.slack}${String(sc.slack).endsWith("%") ? " of each robot's task cost" : " steps"}`,
                   `rules v${sc.rule_version}`, `created ${when(sc.created_at)}`];
    $("scenario-meta").textContent = parts.join(" · ");
    const label = $("deployed-label");
    label.textContent = sc.deployed_run_id ? `Robots follow run #${sc.deployed_run_id} (deployed)`
      : "Robots follow their naive, task-optimal policies (no run deployed)";
    label.dataset.runId = sc.deployed_run_id ?? "";
    label.className = sc.deployed_run_id ? "deployed" : "naive";
    $("undeploy-button").hidden = !sc.deployed_run_id;
    if (document.activeElement !== $("tolerance")) $("tolerance").value = String(sc.tolerance);
    $("auto-deploy").checked = Boolean(sc.auto_deploy);
    // The replan box defaults to the scenario's setting, but only when the scenario or that
    // setting changes: a later push of the same scenario must not undo the operator's tick.
    const defaults = `${sc.id}:${Boolean(sc.auto_deploy)}`;
    if (state.deployDefaultFor !== defaults) {
      state.deployDefaultFor = defaults;
      $("deploy-on-success").checked = Boolean(sc.auto_deploy);
    }
    renderTokenRobots(sc);
  }

  /** Put a scenario (from the API or the push channel) in the list and the header. */
  function putScenario(sc) {
    const i = state.scenarios.findIndex((x) => x.id === sc.id);
    const before = i >= 0 ? state.scenarios[i] : null;
    if (i >= 0) state.scenarios[i] = sc; else state.scenarios.push(sc);
    renderScenarioList();
    if (sc.id === state.scenarioId) {
      renderScenarioHead();
      if (before && before.deployed_run_id !== sc.deployed_run_id) {
        loadMap(sc.id); // the paths robots follow changed
        loadDeployedRobots(sc.id);
        for (const run of state.runs) run.deployed = run.id === sc.deployed_run_id;
        renderRuns();
        renderRobotList();
      }
      if (before && before.planning.status !== "succeeded" && sc.planning.status === "succeeded" && !state.map) loadMap(sc.id);
    }
  }

  async function saveSettings(event) {
    event.preventDefault();
    const id = state.scenarioId;
    $("settings-errors").replaceChildren();
    try {
      putScenario(await api("PATCH", `/scenarios/${id}`,
        { tolerance: numberOrNull($("tolerance")), auto_deploy: $("auto-deploy").checked }));
    } catch (error) {
      report(error, $("settings-errors"));
    }
  }

  async function undeploy() {
    $("settings-errors").replaceChildren();
    try {
      putScenario(await api("POST", `/scenarios/${state.scenarioId}/undeploy`));
    } catch (error) {
      report(error, $("settings-errors"));
    }
  }

  async function deploySelected() {
    const runId = state.selectedRunId;
    $("result-errors").replaceChildren();
    try {
      await api("POST", `/runs/${runId}/deploy`);
      const sc = await api("GET", `/scenarios/${state.scenarioId}`);
      putScenario(sc);
      for (const run of state.runs) run.deployed = run.id === sc.deployed_run_id;
      renderRuns();
      updateDeployButton();
    } catch (error) {
      report(error, $("result-errors"));
    }
  }

  function updateDeployButton() {
    const sc = currentScenario();
    const run = state.runs.find((r) => r.id === state.selectedRunId);
    const button = $("deploy-button");
    const can = Boolean(sc && run && run.status === "succeeded" && sc.deployed_run_id !== run.id);
    button.hidden = !can;
    if (can) {
      const back = sc.deployed_run_id && run.id < sc.deployed_run_id;
      button.textContent = back ? `Roll back to run #${run.id}` : `Deploy run #${run.id}`;
    }
  }

  async function selectScenario(id) {
    stopRunPolling();
    closeEvents();
    Object.assign(state, { scenarioId: id, map: null, runs: [], selectedRunId: null, liveRunId: null, versions: [],
                           monitor: null, history: [], explained: null, highlight: null });
    state.compareIds.clear();
    state.reports.clear();
    state.alerts.clear();
    state.focus.clear();
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

    renderAlerts();
    renderHistory();
    renderRobotList();
    $("token-new").hidden = true;
    const mapLoad = loadMap(id);
    await Promise.all([mapLoad, loadRules(id, mapLoad), loadRuns(id, { selectNewest: true }), loadMonitor(id),
                       loadHistory(id), loadAlerts(id), loadTokens(id), loadDeployedRobots(id)]);
    const sc = currentScenario();
    if (state.scenarioId === id && sc && sc.active_run_id) trackRun(sc.active_run_id, true);
    if (state.scenarioId === id) connectEvents(id);
  }

  async function loadMethods() {
    try {
      state.methods = await api("GET", "/methods");
    } catch (error) {
      report(error, $("replan-errors"));
      return;
    }
    $("method").replaceChildren(...state.methods.map((m) => h("option", {
      value: m.name, selected: m.name === DEFAULT_METHOD, title: m.description,
    }, m.name)));
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
      robots: numberOrNull($("create-robots")),
      seed: numberOrNull($("create-seed")) ?? 0,
      slack: budgetOrDefault($("create-slack")),
      tolerance: numberOrNull($("create-tolerance")) ?? 0,
      auto_deploy: $("create-auto-deploy").checked,
    };
    const file = $("create-file").files[0];
    if (file) body.map_text = await file.text(); else body.map = $("create-map").value || null;
    if (name) body.name = name;
    const button = $("create-button");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const created = await api("POST", "/scenarios", body);
      $("create-name").value = "";
      $("create-file").value = "";
      $("create-file-name").textContent = "";
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
      let map;
      for (;;) {
        try {
          map = await api("GET", `/scenarios/${id}/map`);
          break;
        } catch (error) {
          // 503: the fleet is still being planned in the background; ask again when told to
          if (!(error instanceof ApiError && error.status === 503) || state.scenarioId !== id) throw error;
          $("map-container").replaceChildren(h("p", { class: "hint" }, "Planning the fleet…"));
          await new Promise((resolve) => setTimeout(resolve, 1000 * Math.min(error.retryAfter || 1, 5)));
          if (state.scenarioId !== id) return;
        }
      }
      if (state.scenarioId !== id) return;
      state.map = map;
      renderMap();
    } catch (error) {
      if (state.scenarioId !== id) return;
      $("map-container").replaceChildren();
      report(error, $("map-errors"));
    }
  }

  const C = 32; // cell size in SVG units; the drawing scales to the panel

  /** Robots whose paths are drawn: every robot in a small fleet, the chosen ones in a large one. */
  function shownPaths() {
    if (!state.map) return [];
    const robots = state.map.robots;
    if (!$("show-paths").checked) return robots.filter((r) => state.focus.has(r.id));
    if (robots.length <= PATH_LIMIT) return robots;
    return robots.filter((r) => state.focus.has(r.id));
  }

  function renderMap() {
    const map = state.map;
    const root = s("svg", {
      id: "map-svg", "data-testid": "map-svg", viewBox: `0 0 ${map.width * C} ${map.height * C}`,
      role: "img", class: "map",
      "aria-label": `Map ${map.width} by ${map.height} with ${map.zones.length} NSE zones and ${map.robots.length} robots`,
    });
    const defs = s("defs", { id: "map-defs" });
    const cells = s("g", { class: "cells" });
    const symbols = new Set();
    const labels = s("g", { class: "cell-labels" });
    map.grid.forEach((row, y) => {
      [...row].forEach((ch, x) => {
        const open = Boolean(map.passable[y] && map.passable[y][x]);
        const kind = open ? "cell" : WALLS.includes(ch) ? "wall" : "block";
        cells.append(s("rect", { x: x * C, y: y * C, width: C, height: C, class: kind,
                                 "data-testid": kind === "wall" ? "wall" : null }));
        symbols.add(ch);
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
    root.append(defs, cells, zones, s("g", { id: "heat-layer", class: "heat" }), labels,
                s("g", { id: "path-layer", class: "robots" }), s("g", { id: "change-layer", class: "changes" }),
                s("g", { id: "marker-layer", class: "markers" }), s("g", { id: "marker-labels", class: "marker-labels" }));
    $("map-container").replaceChildren(root);
    $("map-errors").replaceChildren();

    const source = $("map-source");
    source.textContent = map.run_id ? `paths under the deployed run #${map.run_id}` : "paths under the naive policies";
    source.dataset.runId = map.run_id ?? "";
    const many = map.robots.length > PATH_LIMIT;
    $("show-paths").disabled = many;
    if (many) $("show-paths").checked = false;
    $("map-hint").textContent = many
      ? `${map.robots.length} robots: pick robots in the list to draw their paths (up to ${PATH_LIMIT} at once)` : "";

    const legend = [
      h("li", {}, h("span", { class: "swatch wall" }), "wall / blocked"),
      ...map.zones.map((zone, i) => h("li", { "data-testid": "legend-zone", "data-zone": zone.name },
        h("span", { class: "swatch", style: `background:${zoneColor(i)}` }), `NSE zone ${zone.name}`)),
      h("li", {}, h("span", { class: "swatch marker" }), "robot at its last reported cell"),
      h("li", {}, h("span", { class: "swatch marker unreported" }), "not reported yet (start cell)"),
      h("li", {}, h("span", { class: "swatch marker violating" }), "in a zone in violation"),
      h("li", {}, h("span", { class: "swatch line dashed" }), "path before the selected run"),
      ...[...symbols].filter((ch) => map.legend[ch] && !/[0-9]/.test(ch)).sort().map((ch) =>
        h("li", { "data-testid": "legend-symbol", "data-symbol": ch }, h("code", {}, ch), map.legend[ch])),
      [...symbols].some((ch) => /[0-9]/.test(ch)) ? h("li", { "data-testid": "legend-symbol", "data-symbol": "0-9" },
        h("code", {}, "0-9"), "start cell of generated robots") : null,
    ];
    $("map-legend").replaceChildren(...legend.filter(Boolean));
    renderPaths();
    renderOverlay();
    renderMarkers();
  }

  function renderPaths() {
    const layer = $("path-layer");
    const defs = $("map-defs");
    if (!layer || !state.map) return;
    const shown = shownPaths();
    const lanes = Math.min(shown.length, 4);
    defs.replaceChildren();
    const groups = shown.map((robot, slot) => {
      const color = robotColor(slot); // colours by slot: none repeats among the drawn paths
      const shift = lanes > 1 ? ((slot % lanes) - (lanes - 1) / 2) * C * 0.14 : 0;
      const at = ([x, y]) => [x * C + C / 2 + shift, y * C + C / 2 + shift];
      defs.append(s("marker", { id: `arrow-${slot}`, viewBox: "0 0 10 10", refX: 7, refY: 5, markerWidth: 4,
                                markerHeight: 4, orient: "auto" }, s("path", { d: "M0,0 L10,5 L0,10 z", fill: color })));
      const [sx, sy] = at(robot.start);
      const group = s("g", { class: `robot${state.highlight === robot.id ? " highlighted" : ""}`, "data-testid": "robot-path",
                             "data-robot": robot.id, "data-color": color },
        s("title", {}, `${robot.id}: starts at (${robot.start.join(", ")}), ${robot.path.length} cells planned`));
      if (robot.path.length > 1) {
        group.append(s("polyline", {
          points: robot.path.map((cell) => at(cell).join(",")).join(" "), stroke: color, class: "path",
          "marker-end": `url(#arrow-${slot})`, "data-cells": robot.path.length,
        }));
      }
      group.append(s("circle", { cx: sx, cy: sy, r: C * 0.16, fill: color, class: "start", "data-testid": "robot-start" }));
      // in a large fleet the marker's label names the robot; a second label would collide
      if (state.map.robots.length <= PATH_LIMIT) {
        group.append(s("text", { x: sx, y: sy - C * 0.42, class: "robot-label path-label", fill: color }, robot.id));
      }
      return group;
    });
    layer.replaceChildren(...groups);
  }

  /** The selected run's changes (old and new paths of replanned robots) and the NSE heat map. */
  function renderOverlay() {
    const heat = $("heat-layer"), changes = $("change-layer");
    if (!heat || !state.map) return;
    const ex = state.explained;
    const mode = $("heat-mode").value;
    heat.replaceChildren();
    changes.replaceChildren();
    if (ex && mode !== "off") {
      const top = Math.max(...ex.cells.map((c) => Math.max(c.before, c.after)), 1e-12);
      heat.append(...ex.cells.map((c) => {
        const v = c[mode];
        return s("rect", { x: c.x * C, y: c.y * C, width: C, height: C, class: "heat-cell", "data-testid": "heat-cell",
                           "data-x": c.x, "data-y": c.y, "data-value": String(v),
                           "fill-opacity": (0.08 + 0.82 * v / top).toFixed(3) },
          s("title", {}, `(${c.x}, ${c.y}) zone ${c.zone}: expected NSE ${fmt(v, 4)} penalty units per episode ${mode} run #${ex.run_id}`));
      }));
    }
    if (ex && $("show-changes").checked) {
      const at = ([x, y]) => `${x * C + C / 2},${y * C + C / 2}`;
      ex.robots.filter((r) => r.updated).forEach((robot) => {
        const slot = shownPaths().findIndex((r) => r.id === robot.id);
        const color = slot >= 0 ? robotColor(slot) : "#ea580c";
        changes.append(s("g", { "data-testid": "change", "data-robot": robot.id },
          s("title", {}, `${robot.id}: replanned by run #${ex.run_id} (dashed: before, solid: after)`),
          s("polyline", { points: robot.path_before.map(at).join(" "), class: "path-before", "data-testid": "change-before" }),
          s("polyline", { points: robot.path_after.map(at).join(" "), class: "path-after", stroke: color,
                          "data-testid": "change-after" })));
      });
    }
  }

  /** Robots at their last reported cells (their start until they report), labels placed apart. */
  function renderMarkers() {
    const layer = $("marker-layer"), labelLayer = $("marker-labels");
    if (!layer || !state.map) return;
    const violating = new Set(state.monitor ? state.monitor.zones_in_violation : []);
    const byCell = new Map();
    for (const robot of state.map.robots) {
      const report = state.reports.get(robot.id);
      const cell = report ? report.cell : robot.start;
      const key = cell.join(",");
      if (!byCell.has(key)) byCell.set(key, []);
      byCell.get(key).push({ robot, report, cell });
    }
    const markers = [], boxes = [], placed = [];
    const shown = new Map(shownPaths().map((r, slot) => [r.id, robotColor(slot)]));
    for (const group of byCell.values()) {
      group.forEach(({ robot, report, cell }, k) => {
        // robots sharing a cell sit around its centre
        const n = group.length, angle = (2 * Math.PI * k) / n;
        const spread = n > 1 ? C * 0.22 : 0;
        const cx = cell[0] * C + C / 2 + spread * Math.cos(angle), cy = cell[1] * C + C / 2 + spread * Math.sin(angle);
        const r = n > 1 ? C * 0.16 : C * 0.24;
        const bad = report && report.zone && violating.has(report.zone);
        const classes = ["marker", report ? "reported" : "unreported", bad ? "violating" : "",
                         state.highlight === robot.id ? "highlighted" : ""].filter(Boolean).join(" ");
        markers.push(s("circle", {
          cx, cy, r, class: classes, fill: report ? (shown.get(robot.id) || "#334155") : "none",
          stroke: shown.get(robot.id) || "#334155", "data-testid": "robot-marker", "data-robot": robot.id,
          "data-x": cell[0], "data-y": cell[1], "data-violating": bad ? "true" : "false",
          onclick: () => toggleFocus(robot.id),
        }, s("title", {}, `${robot.id} at (${cell.join(", ")})${report ? `, last seen ${age(report.received_at)}` : ", not reported yet"}${bad ? `, in zone ${report.zone} (violation)` : ""}`)));
        boxes.push([cx - r, cy - r, cx + r, cy + r]);
        placed.push({ id: robot.id, cx, cy, r });
      });
    }
    layer.replaceChildren(...markers);
    // labels: the first free spot around each marker, none if all would overlap (the title has it)
    const taken = [...boxes];
    const overlaps = (b) => taken.some((o) => b[0] < o[2] && b[2] > o[0] && b[1] < o[3] && b[3] > o[1]);
    const texts = [];
    const order = [...placed].sort((a, b) => (a.id === state.highlight ? -1 : b.id === state.highlight ? 1 : 0));
    for (const m of order) {
      const w = 7.2 * m.id.length + 6, hgt = 15; // generous: 11 px bold text, kept apart
      const spots = [[m.r + 2, -hgt / 2], [-m.r - 2 - w, -hgt / 2], [-w / 2, -m.r - 2 - hgt], [-w / 2, m.r + 2],
                     [m.r, -m.r - hgt], [-m.r - w, -m.r - hgt], [m.r, m.r], [-m.r - w, m.r]];
      for (const [dx, dy] of spots) {
        const b = [m.cx + dx, m.cy + dy, m.cx + dx + w, m.cy + dy + hgt];
        if (b[0] < 0 || b[1] < 0 || b[2] > state.map.width * C || b[3] > state.map.height * C || overlaps(b)) continue;
        taken.push(b);
        texts.push(s("text", { x: b[0] + 2, y: b[1] + hgt / 2, class: "marker-label", "data-testid": "marker-label",
                               "data-robot": m.id }, m.id));
        break;
      }
    }
    labelLayer.replaceChildren(...texts);
  }

  function toggleFocus(robotId) {
    if (!state.map) return;
    const many = state.map.robots.length > PATH_LIMIT || !$("show-paths").checked;
    if (state.highlight === robotId) {
      state.highlight = null;
      if (many) state.focus.delete(robotId);
    } else {
      state.highlight = robotId;
      if (many) {
        if (state.focus.size >= PATH_LIMIT) state.focus.delete(state.focus.values().next().value);
        state.focus.add(robotId);
      }
    }
    renderPaths();
    renderOverlay();
    renderMarkers();
    renderRobotList();
  }

  /** The robot list: task, reported state, whose policy, last seen, blame in the deployed run. */
  function renderRobotList() {
    const body = $("robot-list");
    const sc = currentScenario();
    if (!sc) { body.replaceChildren(); return; }
    const deployed = state.runs.find((r) => r.id === sc.deployed_run_id);
    const blame = new Map((state.deployedRobots || []).map((r) => [r.id, r.blame]));
    const rows = sc.robots.map((task) => {
      const report = state.reports.get(task.id);
      const ran = report ? report.run_id : undefined;
      const stale = report && report.run_id !== null && report.run_id !== undefined && report.run_id !== sc.deployed_run_id;
      const follows = !report ? "—" : ran === null || ran === undefined
        ? (sc.deployed_run_id ? "not said" : "naive") : `run #${ran}${stale ? " (not the deployed one)" : ""}`;
      const b = blame.get(task.id);
      const bad = report && report.in_violation;
      return h("tr", {
        "data-testid": "robot-row", "data-robot": task.id, class: `clickable${bad ? " violating" : ""}`,
        "aria-selected": state.highlight === task.id ? "true" : "false", onclick: () => toggleFocus(task.id),
      },
      h("td", {}, h("strong", {}, task.id), state.focus.has(task.id) ? h("span", { class: "badge" }, "path") : null),
      h("td", {}, `${task.kind}${task.option ? ` ${task.option}` : ""}${task.items.length ? ` · ${task.items.length} item${task.items.length === 1 ? "" : "s"}` : ""}`),
      h("td", { "data-testid": "robot-state" }, report ? `(${report.cell.join(", ")})${report.zone ? ` in ${report.zone}` : ""} [${report.state.join(",")}]` : "not reported"),
      h("td", { "data-testid": "robot-run", class: stale ? "warn-text" : null }, follows),
      h("td", { class: "num", "data-testid": "robot-last-seen", "data-at": report ? report.received_at : "" },
        report ? age(report.received_at) : "never"),
      numberCell(b, deployed && b !== undefined ? fmt(b) : "—", "robot-blame"));
    });
    body.replaceChildren(...rows);
  }

  function tickAges() {
    for (const cell of document.querySelectorAll("[data-testid=robot-last-seen]")) {
      if (cell.dataset.at) cell.textContent = age(cell.dataset.at);
    }
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

  // an imported policy file's run reads "import (ev2bc)": its method and the file's learner
  function methodLabel(run) {
    return run.imported ? `${run.method} (${run.imported.learner})` : run.method;
  }

  // a run's parameter (update fraction, rounds), or a dash (an imported run has none)
  function param(run, name) {
    const value = run.params[name];
    return isBlank(value) ? "—" : String(value);
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
        "data-testid": "run-row", "data-run-id": run.id, class: `clickable${run.deployed ? " deployed" : ""}`,
        "aria-selected": run.id === state.selectedRunId ? "true" : "false",
        title: run.error ? `${run.status}: ${run.error}` : "Show this run's result",
        onclick: () => selectRun(run.id),
      },
      h("td", { class: "center" }, checkbox),
      h("td", { "data-testid": "run-id" }, `#${run.id}`),
      h("td", {}, run.deployed ? h("span", { class: "badge deployed", "data-testid": "run-deployed" }, "deployed")
        : run.deploy_on_success && (run.status === "queued" || run.status === "running")
          ? h("span", { class: "badge" }, "deploys on success") : ""),
      h("td", { "data-testid": "run-method", class: "nowrap" }, methodLabel(run)),
      numberCell(run.params.update_fraction, param(run, "update_fraction"), "run-fraction"),
      numberCell(run.params.rounds, param(run, "rounds"), "run-rounds"),
      numberCell(run.rule_version, `v${run.rule_version}`, "run-rule-version"),
      h("td", {}, statusBadge(run)),
      numberCell(sm && sm.nse_before, fmt(sm && sm.nse_before), "run-nse-before"),
      numberCell(sm && sm.nse_after, fmt(sm && sm.nse_after), "run-nse-after"),
      h("td", { class: "num" }, sm ? change(sm.nse_before, sm.nse_after) : "—"),
      numberCell(sm && sm.nse_state_rate_before, pct(sm && sm.nse_state_rate_before), "run-rate-before"),
      numberCell(sm && sm.nse_state_rate_after, pct(sm && sm.nse_state_rate_after), "run-rate-after"),
      numberCell(sm && sm.updated.length, sm ? String(sm.updated.length) : "—", "run-updated"),
      h("td", { class: "nowrap", "data-testid": "run-by" }, run.created_by || "—"),
      h("td", { class: "nowrap", title: when(run.finished_at) }, run.finished_at ? when(run.finished_at).slice(11, 19) : "—"));
    });
    $("runs-body").replaceChildren(...rows);
    $("runs-empty").hidden = state.runs.length > 0;
    $("runs-table").hidden = state.runs.length === 0;
    updateCompareButton();
    updateDeployButton();
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
        s("title", {}, `run #${run.id} (${methodLabel(run)}): NSE ${fmt(b)} before, ${fmt(a)} after`),
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
    box.replaceChildren(h("h3", {}, "NSE penalty per run ", h("span", { class: "hint" }, "(J_N, penalty units per episode)")), svg);
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
      loadExplanation(run);
    } catch (error) {
      if (state.scenarioId === id) report(error, $("result-errors"));
    }
  }

  function renderResult(run) {
    $("result-empty").hidden = Boolean(run);
    $("result-body").hidden = !run;
    $("result-run").textContent = run ? `run #${run.id} · ${methodLabel(run)} · ${run.status}` +
      `${run.deployed ? " · deployed" : ""} · before: ${run.base_run_id ? `run #${run.base_run_id}` : "naive policies"}` : "";
    $("result-panel").dataset.runId = run ? run.id : "";
    if (!run || run.id !== (state.explained && state.explained.run_id)) {
      $("explain").hidden = true;
      state.explained = null;
      renderOverlay();
    }
    updateDeployButton();
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
        `${sm.updated.length} of ${run.robots.length} robots replanned · ${sm.rounds.length} round${sm.rounds.length === 1 ? "" : "s"} · ${seconds.toFixed(1)} s · penalty units per episode`;
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
      s("title", {}, `${robot.id}: blame ${fmt(robot.blame, 4)} penalty units per episode, task regret ${fmt(robot.task_regret, 4)} of budget ${fmt(robot.slack, 4)} steps` +
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

  async function loadExplanation(run) {
    const id = state.scenarioId;
    $("explain-errors").replaceChildren();
    if (run.status !== "succeeded") return;
    try {
      const ex = await api("GET", `/runs/${run.id}/explain`);
      if (state.scenarioId !== id || state.selectedRunId !== run.id) return;
      state.explained = ex;
      renderExplanation(ex);
      renderOverlay();
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) return; // an old run, or not succeeded
      if (state.scenarioId === id) report(error, $("explain-errors"));
    }
  }

  function renderExplanation(ex) {
    $("explain").hidden = false;
    $("explain").dataset.runId = ex.run_id;
    // the timeline: expected NSE penalty at each step, before and after
    const n = ex.per_step_before.length;
    const top = Math.max(...ex.per_step_before, ...ex.per_step_after, 1e-12);
    const left = 56, width = 460, height = 150, base = 10 + height;
    const x = (t) => left + (n > 1 ? (t / (n - 1)) * width : 0);
    const y = (v) => base - (v / top) * height;
    const line = (values) => values.map((v, t) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const sum = (a) => a.reduce((p, q) => p + q, 0);
    const svg = s("svg", { viewBox: `0 0 ${left + width + 150} ${base + 36}`, width: left + width + 150, height: base + 36,
                           class: "bar-chart timeline", role: "img",
                           "aria-label": "Exact expected NSE penalty per step before and after the run" },
      s("line", { x1: left, x2: left + width, y1: base, y2: base, class: "axis" }),
      s("line", { x1: left, x2: left, y1: 10, y2: base, class: "axis" }),
      s("text", { x: left - 6, y: base, class: "tick end" }, "0"),
      s("text", { x: left - 6, y: 14, class: "tick end" }, fmt(top, 3)),
      s("text", { x: left, y: base + 14, class: "tick middle" }, "0"),
      s("text", { x: left + width, y: base + 14, class: "tick middle" }, String(n - 1)),
      s("text", { x: left + width / 2, y: base + 30, class: "tick middle small" }, "step t (penalty units per step)"),
      s("polyline", { points: line(ex.per_step_before), class: "line before", "data-testid": "timeline-before",
                      "data-values": JSON.stringify(ex.per_step_before) }),
      s("polyline", { points: line(ex.per_step_after), class: "line after", "data-testid": "timeline-after",
                      "data-values": JSON.stringify(ex.per_step_after) }),
      s("rect", { x: left + width + 16, y: 24, width: 12, height: 4, class: "before" }),
      s("text", { x: left + width + 34, y: 27, class: "tick" }, `before: J_N ${fmt(sum(ex.per_step_before))}`),
      s("rect", { x: left + width + 16, y: 44, width: 12, height: 4, class: "after" }),
      s("text", { x: left + width + 34, y: 47, class: "tick" }, `after: J_N ${fmt(sum(ex.per_step_after))}`));
    $("timeline").replaceChildren(svg);
    $("zone-table").replaceChildren(...Object.keys(ex.per_zone_before).map((zone) => {
      const b = ex.per_zone_before[zone], a = ex.per_zone_after[zone];
      return h("tr", { "data-testid": "zone-row", "data-zone": zone }, h("td", {}, zone),
        numberCell(b, fmt(b), "zone-before"), numberCell(a, fmt(a), "zone-after"),
        h("td", { class: "num" }, change(b, a)));
    }));
    const rounds = ex.rounds.map((r) => `round ${r.round}: ${r.selected.length} selected (cut-off ${fmt(r.cutoff, 4)} penalty units` +
      `${r.tied_out.length ? `; tied at the cut-off and left out: ${r.tied_out.join(", ")}` : ""}), ` +
      `${r.accepted.length} kept by the acceptance step${r.rejected.length ? `, ${r.rejected.length} refused (${r.rejected.join(", ")})` : ""}`);
    $("rounds-text").textContent = `Up to ${ex.k} robot${ex.k === 1 ? "" : "s"} replan per round. ` +
      (rounds.length ? rounds.join("; ") + "." : "No round ran.");
    const robots = [...ex.robots].sort((p, q) => (q.updated - p.updated) || (q.blame - p.blame));
    $("why-table").replaceChildren(...robots.slice(0, 200).map((r) => h("tr", {
      "data-testid": "why-row", "data-robot": r.id, class: r.updated ? "updated clickable" : "clickable",
      onclick: () => toggleFocus(r.id),
    },
    h("td", {}, h("strong", {}, r.id), r.updated ? h("span", { class: "badge updated" }, "replanned") : null,
      r.tied_out.length ? h("span", { class: "badge", "data-testid": "why-tie" }, "tie") : null),
    numberCell(r.blame, fmt(r.blame), "why-blame"),
    numberCell(r.rank, r.rank === null ? "—" : String(r.rank), "why-rank"),
    h("td", { class: "num" }, `${fmt(r.task_regret, 2)} / ${fmt(r.slack, 2)} steps`),
    h("td", { "data-testid": "why-reason" }, r.reason))));
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
      h("th", { class: "num", title: "J_N before, penalty units per episode" }, "NSE before"),
      h("th", { class: "num", title: "J_N after, penalty units per episode" }, "NSE after"), h("th", { class: "num" }, "Change"),
      h("th", { class: "num" }, "Rate before"), h("th", { class: "num" }, "Rate after"),
      h("th", { class: "num", title: "steps (every action costs 1)" }, "Task regret (sum, steps)"), h("th", {}, "Replanned robots"));
    const rows = runs.map((run) => {
      const sm = run.summary;
      const regret = run.robots.reduce((a, r) => a + r.task_regret, 0);
      return h("tr", { "data-testid": "compare-row", "data-run-id": run.id, class: run.id === best ? "best" : null },
        h("td", {}, `#${run.id}`, run.id === best ? h("span", { class: "badge best", "data-testid": "best-run" }, "lowest NSE after") : null),
        h("td", {}, methodLabel(run)),
        h("td", { class: "num" }, param(run, "update_fraction")),
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
      h("div", { class: "card-head" }, h("h3", {}, `Comparing runs ${runs.map((r) => `#${r.id}`).join(", ")} `,
        h("span", { class: "hint" }, "(NSE: J_N in penalty units per episode)")),
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
                   rounds: numberOrNull($("rounds")), deploy: $("deploy-on-success").checked };
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
    const eventsBefore = state.runEvents[runId] || 0;
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
    // a pushed event came while this answer was on its way: the event is the newer state (a run
    // that fails at once can be "failed" in the event and still "running" in this answer), and
    // the push channel brings every later change
    if ((state.runEvents[runId] || 0) !== eventsBefore) return;
    renderLive(run);
    if (run.status === "queued" || run.status === "running") {
      state.liveWasActive = true;
      setReplanBusy(true);
      // the push channel brings its progress; polling only while it is down
      if (!state.live) state.runTimer = setTimeout(() => pollRun(runId, scenarioId), RUN_POLL_MS);
      return;
    }
    setReplanBusy(false);
    if (state.liveWasActive) {
      state.liveWasActive = false;
      await runFinished(run, scenarioId);
    }
  }

  /** A run event from the push channel (a run started here, in another tab, over the API or by the ROS bridge). */
  function onRunEvent(run) {
    state.runEvents[run.id] = (state.runEvents[run.id] || 0) + 1;
    const i = state.runs.findIndex((r) => r.id === run.id);
    const active = run.status === "queued" || run.status === "running";
    // polling may first see a run that started elsewhere when it has already finished
    const finishedUnseen = i < 0 && !active && !(state.liveRunId && state.liveWasActive);
    if (i >= 0) state.runs[i] = { ...state.runs[i], ...run }; else state.runs.push(run);
    state.runs.sort((a, b) => a.id - b.id);
    renderRuns();
    if (run.id === state.liveRunId) {
      renderLive(run);
      if (active) {
        state.liveWasActive = true;
        setReplanBusy(true);
      } else if (state.liveWasActive) {
        state.liveWasActive = false;
        setReplanBusy(false);
        stopRunPolling();
        runFinished(run, state.scenarioId);
      }
    } else if (active && !(state.liveRunId && state.liveWasActive)) {
      trackRun(run.id, true); // follow it live, wherever it was started
    } else if (finishedUnseen) {
      // as if followed to its end: the live panel shows it, the result and the map are brought up to date
      stopRunPolling();
      state.liveRunId = run.id;
      state.liveWasActive = false;
      renderLive(run);
      runFinished(run, state.scenarioId);
    }
    if (run.id === state.selectedRunId && !active) showRun(run.id);
  }

  function renderLive(run) {
    $("run-live").hidden = false;
    $("run-live").dataset.runId = run.id;
    $("run-live").dataset.status = run.status;
    $("run-live-title").textContent = `Run #${run.id} · ${methodLabel(run)}` + (run.imported ? "" :
      ` · f ${run.params.update_fraction} · ${run.params.rounds} round${run.params.rounds === 1 ? "" : "s"}`) +
      (run.attempts > 1 ? ` · attempt ${run.attempts}` : "");
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
    if (state.scenarioId === scenarioId && state.selectedRunId === run.id) showRun(run.id);
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
      if (state.token && state.scenarioId !== null && !document.hidden && !state.live) await loadMonitor(state.scenarioId);
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
    putReports(monitor.robots, true);
    renderMonitor(monitor);
  }

  /** Robots' reports (a whole list from the monitor, or the changed ones from the push channel). */
  function putReports(reports, whole = false) {
    if (whole) state.reports.clear();
    for (const r of reports) state.reports.set(r.robot_id, r);
    renderMarkers();
    renderRobotList();
  }

  function renderMonitor(monitor) {
    state.monitor = monitor;
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
    $("monitor-updated").textContent = `rules v${monitor.rule_version} · tolerance ${monitor.tolerance} · penalty units · ` +
      `updated ${new Date().toLocaleTimeString()}${state.live ? " · live" : ` · every ${MONITOR_POLL_MS / 1000} s`}`;
    renderMarkers();
    renderRobotList();
  }

  // -- the push channel --------------------------------------------------------------------
  function setLive(live, text) {
    state.live = live;
    const badge = $("live-status");
    badge.dataset.state = live ? "live" : state.token ? "polling" : "off";
    badge.textContent = text || (live ? "live" : "polling");
    badge.title = live ? "Changes are pushed to this page (server-sent events)"
      : "The push channel is down: the page polls the service every few seconds";
  }

  function closeEvents() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.fallbackTimer);
    state.fallbackTimer = null;
    if (state.events) state.events.close();
    state.events = null;
    state.streamFor = null;
    setLive(false, state.token ? "polling" : "offline");
  }

  /** Poll what the push channel would bring, while it is down. */
  function startFallback(id) {
    if (state.fallbackTimer) return;
    state.fallbackTimer = setInterval(async () => {
      if (state.live || state.scenarioId !== id || document.hidden) return;
      try {
        const [sc, runs] = await Promise.all([api("GET", `/scenarios/${id}`), api("GET", `/scenarios/${id}/runs`)]);
        if (state.scenarioId !== id || state.live) return;
        putScenario(sc);
        for (const run of runs) {
          const known = state.runs.find((r) => r.id === run.id);
          if (!known || known.status !== run.status || known.progress !== run.progress || known.deployed !== run.deployed) onRunEvent(run);
        }
        loadAlerts(id);
        loadHistory(id);
      } catch (error) { /* shown by the next successful call's absence; retried */ }
    }, FALLBACK_POLL_MS);
  }

  async function connectEvents(id) {
    closeEvents();
    state.streamFor = id;
    startFallback(id);
    // a browser (or a proxy's page rewriting) without EventSource: the page stays on polling
    if (typeof window.EventSource !== "function") {
      setLive(false, "polling (no EventSource)");
      return;
    }
    let ticket;
    try {
      ticket = await api("POST", "/events/tickets", { scenario_id: id });
    } catch (error) {
      if (state.streamFor === id && !isAuthError(error)) state.reconnectTimer = setTimeout(() => connectEvents(id), RECONNECT_MS * 2);
      return;
    }
    if (state.streamFor !== id) return;
    const source = new EventSource(`${API}/scenarios/${id}/events?ticket=${encodeURIComponent(ticket.ticket)}`);
    state.events = source;
    const on = (kind, handler) => source.addEventListener(kind, (event) => {
      if (state.events !== source || state.scenarioId !== id) return;
      let data;
      try { data = JSON.parse(event.data); } catch { return; }
      $("live-status").dataset.lastEventId = event.lastEventId;
      handler(data);
    });
    on("snapshot", (data) => {
      setLive(true);
      clearInterval(state.fallbackTimer);
      state.fallbackTimer = null;
      putScenario(data.scenario);
      state.runs = data.runs;
      renderRuns();
      for (const run of data.runs) if (run.status === "queued" || run.status === "running") onRunEvent(run);
      putReports(data.monitor.robots, true);
      renderMonitor(data.monitor);
      state.alerts = new Map(data.alerts.map((a) => [a.id, a]));
      renderAlerts();
      state.history = data.history;
      renderHistory();
    });
    on("run", onRunEvent);
    on("scenario", putScenario);
    on("plan", () => {});
    on("deployment", () => loadDeployedRobots(id));
    on("rules", (version) => {
      if (!state.versions.some((v) => v.version === version.version)) {
        state.versions.push(version);
        state.versions.sort((a, b) => a.version - b.version);
        renderVersions();
      }
    });
    on("robots", (data) => putReports(data.robots, Boolean(data.reset)));
    on("monitor", renderMonitor);
    on("alert", (alert) => {
      if (alert.acknowledged_at) state.alerts.delete(alert.id); else state.alerts.set(alert.id, alert);
      renderAlerts();
      loadAlerts(id, true);
    });
    on("history", (entry) => {
      if (!state.history.some((e) => e.id === entry.id)) state.history.push(entry);
      renderHistory();
    });
    on("deleted", async () => {
      closeEvents();
      banner("This scenario was deleted.", "info");
      await refreshScenarios();
      await selectScenario(state.scenarios.length ? state.scenarios[0].id : null);
    });
    source.onerror = () => {
      if (state.events !== source) return;
      // reconnect with a new ticket (a ticket is used once); poll meanwhile
      source.close();
      state.events = null;
      setLive(false, "reconnecting…");
      startFallback(id);
      state.reconnectTimer = setTimeout(() => { if (state.scenarioId === id) connectEvents(id); }, RECONNECT_MS);
    };
  }

  // -- alerts, history, tokens --------------------------------------------------------------
  async function loadAlerts(id, historyOnly = false) {
    try {
      const all = await api("GET", `/scenarios/${id}/alerts?state=all&limit=200`);
      if (state.scenarioId !== id) return;
      if (!historyOnly) state.alerts = new Map(all.filter((a) => !a.acknowledged_at).map((a) => [a.id, a]));
      renderAlerts();
      $("alert-history").replaceChildren(...all.map((a) => h("tr", { "data-testid": "alert-history-row", "data-alert-id": a.id },
        h("td", {}, a.zone), numberCell(a.peak, fmt(a.peak), "alert-history-peak"), h("td", {}, when(a.raised_at)),
        h("td", {}, a.cleared_at ? when(a.cleared_at) : "still above"),
        h("td", {}, a.acknowledged_at ? `${a.acknowledged_by} ${when(a.acknowledged_at)}` : "not yet"))));
    } catch (error) {
      if (state.scenarioId === id) report(error, $("alerts-errors"));
    }
  }

  function renderAlerts() {
    const open = [...state.alerts.values()].sort((a, b) => b.id - a.id);
    $("alerts-panel").hidden = open.length === 0;
    $("alerts-count").textContent = String(open.length);
    $("alerts-list").replaceChildren(...open.map((a) => h("li", {
      class: `alert${a.cleared_at ? " cleared" : ""}`, "data-testid": "alert", "data-alert-id": a.id, "data-zone": a.zone,
    },
    h("span", { class: "alert-text" },
      h("strong", {}, `Zone ${a.zone}`), ` penalty `,
      h("span", { "data-testid": "alert-penalty", "data-value": String(a.penalty) }, fmt(a.penalty)),
      ` > tolerance ${a.tolerance} penalty units (peak `, h("span", { "data-testid": "alert-peak", "data-value": String(a.peak) }, fmt(a.peak)),
      `) · robots ${a.robots.join(", ") || "—"} · raised ${when(a.raised_at)}`,
      a.cleared_at ? ` · back within tolerance ${when(a.cleared_at)}` : " · still above"),
    h("button", { type: "button", class: "small", "data-testid": "alert-ack", onclick: () => acknowledge(a.id) }, "Acknowledge"))));
  }

  async function acknowledge(alertId) {
    try {
      const alert = await api("POST", `/alerts/${alertId}/ack`);
      state.alerts.delete(alert.id);
      renderAlerts();
      loadAlerts(state.scenarioId, true);
    } catch (error) {
      report(error, $("alerts-errors"));
    }
  }

  const HISTORY_TEXT = {
    scenario_created: (e) => `created the scenario (${e.detail.map}, ${e.detail.robots} robots)`,
    run_started: (e) => `started run #${e.run_id} (${e.detail.method}${e.detail.deploy_on_success ? ", deploy on success" : ""})`,
    run_imported: (e) => `imported a policy file as run #${e.run_id} (${e.detail.learner}, ${e.detail.entries} ` +
      `entr${e.detail.entries === 1 ? "y" : "ies"}${e.detail.deploy_on_success ? ", deploy on success" : ""})`,
    run_restarted: (e) => `restarted run #${e.run_id} (attempt ${e.detail.attempt})`,
    deployed: (e) => `deployed run #${e.run_id}${e.detail.automatic ? " (automatically, on success)" : ""}` +
      (e.detail.previous_run_id ? ` instead of run #${e.detail.previous_run_id}` : " instead of the naive policies"),
    rolled_back: (e) => `rolled back to run #${e.run_id} from run #${e.detail.previous_run_id}`,
    undeployed: (e) => `returned the robots to their naive policies (from run #${e.detail.previous_run_id})`,
    rules_edited: (e) => `edited the rules: version ${e.rule_version}${e.detail.note ? ` (“${e.detail.note}”)` : ""}`,
    settings_changed: (e) => `changed ${Object.entries(e.detail.changes).map(([k, v]) => `${k} to ${v}`).join(", ")}`,
    alert_acknowledged: (e) => `acknowledged the alert in zone ${e.detail.zone} (peak ${fmt(e.detail.peak)})`,
    token_created: (e) => `made a token for robot ${e.detail.robot_id}`,
    token_revoked: (e) => `revoked a token of robot ${e.detail.robot_id}`,
    observations_cleared: (e) => `cleared ${e.detail.deleted} state reports`,
  };

  async function loadHistory(id) {
    try {
      const history = await api("GET", `/scenarios/${id}/history`);
      if (state.scenarioId !== id) return;
      state.history = history;
      renderHistory();
    } catch (error) {
      if (state.scenarioId === id) report(error, $("history-errors"));
    }
  }

  function renderHistory() {
    const rows = [...state.history].sort((a, b) => b.id - a.id).slice(0, 300).map((e) => h("tr", {
      "data-testid": "history-row", "data-kind": e.kind, "data-run-id": e.run_id ?? "",
    }, h("td", { class: "nowrap" }, when(e.at)), h("td", { "data-testid": "history-actor" }, e.actor),
    h("td", {}, (HISTORY_TEXT[e.kind] || ((x) => x.kind))(e))));
    $("history-list").replaceChildren(...rows);
  }

  async function exportFile(name) {
    try {
      const response = await fetch(`${API}/scenarios/${state.scenarioId}/export/${name}`,
        { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
      if (!response.ok) throw new ApiError(response.status, (await response.json()).detail);
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: `scenario-${state.scenarioId}-${name}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      report(error, $("history-errors"));
    }
  }

  function renderTokenRobots(sc) {
    const select = $("token-robot");
    const chosen = select.value;
    select.replaceChildren(...sc.robots.map((r) => h("option", { value: r.id, selected: r.id === chosen }, r.id)));
  }

  async function loadTokens(id) {
    try {
      const tokens = await api("GET", `/scenarios/${id}/tokens`);
      if (state.scenarioId !== id) return;
      $("token-list").replaceChildren(...tokens.map((t) => h("tr", { "data-testid": "token-row", "data-token-id": t.id },
        h("td", {}, `#${t.id}`), h("td", {}, t.robot_id), h("td", {}, when(t.created_at)),
        h("td", {}, t.expires_at ? when(t.expires_at) : "until revoked"),
        h("td", {}, h("button", { type: "button", class: "danger secondary small", "data-testid": "token-revoke",
                                  onclick: () => revokeToken(t.id) }, "Revoke")))));
      if (!tokens.length) $("token-list").append(h("tr", {}, h("td", { colspan: 5, class: "hint" }, "No robot tokens.")));
    } catch (error) {
      if (state.scenarioId === id) report(error, $("token-errors"));
    }
  }

  async function makeToken(event) {
    event.preventDefault();
    const id = state.scenarioId;
    $("token-errors").replaceChildren();
    const body = { robot_id: $("token-robot").value };
    const expires = numberOrNull($("token-expires"));
    if (expires !== null) body.expires_in = expires;
    try {
      const made = await api("POST", `/scenarios/${id}/tokens`, body);
      $("token-new-robot").textContent = made.robot_id;
      $("token-new-value").textContent = made.token;
      $("token-new").hidden = false;
      loadTokens(id);
    } catch (error) {
      report(error, $("token-errors"));
    }
  }

  async function revokeToken(tokenId) {
    $("token-errors").replaceChildren();
    try {
      await api("DELETE", `/scenarios/${state.scenarioId}/tokens/${tokenId}`);
      $("token-new").hidden = true;
      loadTokens(state.scenarioId);
    } catch (error) {
      report(error, $("token-errors"));
    }
  }

  /** The deployed run's per-robot blame, for the robot list. */
  async function loadDeployedRobots(id) {
    const sc = currentScenario();
    state.deployedRobots = [];
    if (sc && sc.deployed_run_id) {
      try {
        const run = await api("GET", `/runs/${sc.deployed_run_id}`);
        if (state.scenarioId === id) state.deployedRobots = run.robots;
      } catch (error) { /* the list shows no blame */ }
    }
    renderRobotList();
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
      // the push channel may have brought it already
      if (!state.versions.some((v) => v.version === version.version)) state.versions.push(version);
      state.versions.sort((a, b) => a.version - b.version);
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
    $("show-paths").checked = true;
    $("show-paths").addEventListener("change", () => { renderPaths(); renderOverlay(); renderMarkers(); });
    $("show-changes").checked = true;
    $("show-changes").addEventListener("change", renderOverlay);
    $("heat-mode").addEventListener("change", renderOverlay);
    $("settings-form").addEventListener("submit", saveSettings);
    $("undeploy-button").addEventListener("click", undeploy);
    $("deploy-button").addEventListener("click", deploySelected);
    $("token-form").addEventListener("submit", makeToken);
    for (const button of document.querySelectorAll("[data-export]")) {
      button.addEventListener("click", () => exportFile(button.dataset.export));
    }
    $("create-file").addEventListener("change", () => {
      const file = $("create-file").files[0];
      $("create-file-name").textContent = file ? `${file.name}: used instead of the shipped map` : "";
    });
    setInterval(tickAges, 1000);
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
