"""The operators' dashboard (api/static/dashboard.*) in headless Chromium, through Playwright,
against a real `python -m mase serve` process: signing in (URL fragment, form, refused tokens),
the SVG map, Replan with live progress, NSE before and after in the result panel, the blame
chart, the runs table and the comparison, the live monitor, the rule editor, creating a
scenario, a failed run restarted, and deleting a scenario. Every figure the page shows is
checked against what the API returns. Screenshots go to test-artifacts/ (dashboard.png: the
full page after two runs; one more per test, as the test left the page)."""
from __future__ import annotations

import os
import re
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from service_support import AUTH, OPERATOR, ROOT, ServerProcess, fresh_database_url

pytestmark = pytest.mark.service

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
DEMO = "salp demo (two Turtlebots)"
RUN_TIMEOUT = 90.0  # seconds; a run of the demo takes about 5 to 15 s
CELL = 32  # SVG units per map cell (dashboard.js)


def _unavailable(reason: str) -> None:
    if os.environ.get("MASE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; MASE_REQUIRE_BROWSER=1 requires the browser test", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    return sync_api


@pytest.fixture(scope="module")
def browser(playwright_api):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory, browser):
    tmp = tmp_path_factory.mktemp("dashboard")
    url = fresh_database_url(tmp) if os.environ.get("TEST_DATABASE_URL") else f"sqlite:///{tmp / 'db.sqlite'}"
    server = ServerProcess(tmp, url).start()  # writes the operator token to tmp/tokens first
    try:
        yield server
    finally:
        server.stop()


class Dashboard:
    """One browser tab on the dashboard, and the API beside it to check what the page shows."""

    def __init__(self, page, service: ServerProcess, expect) -> None:
        self.page, self.service, self.expect = page, service, expect
        self.errors: list[str] = []
        self.progress_shot = False
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, f"{self.service.url}/api/v1{path}", headers=AUTH, timeout=30, **kwargs)

    def get(self, path: str):
        response = self.api("GET", path)
        assert response.status_code == 200, response.text
        return response.json()

    def open(self, token: str = OPERATOR) -> None:
        self.page.goto(f"{self.service.url}/dashboard#token={token}")

    def by(self, testid: str):
        return self.page.get_by_test_id(testid)

    def open_demo(self) -> int:
        """Open the dashboard on the salp demo scenario (creating it if missing); its id."""
        self.open()
        self.expect(self.by("scenario-list")).to_be_visible()
        found = [s["id"] for s in self.get("/scenarios") if s["name"] == DEMO]
        if not found:
            self.page.fill("#create-name", DEMO)
            self.page.select_option("#create-map", "salp-demo")
            self.page.fill("#create-robots", "2")
            self.page.click("#create-button")
            self.expect(self.by("scenario-title")).to_have_text(DEMO)
            found = [s["id"] for s in self.get("/scenarios") if s["name"] == DEMO]
        self.page.locator(f'[data-testid=scenario-item][data-id="{found[0]}"]').click()
        self.expect(self.by("scenario-title")).to_have_text(DEMO)
        self.expect(self.by("map-svg")).to_be_visible()
        return found[0]

    def screenshot(self, name: str, locator=None) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        (locator or self.page).screenshot(path=str(ARTIFACTS / name), **({} if locator else {"full_page": True}))

    def wait_for_run(self, run_id: int, status: str = "succeeded") -> tuple[dict, set[str]]:
        """Wait until the live panel shows the run finished; the run from the API, and the phases seen."""
        live, phases = self.by("run-live"), set()
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            phases.add(self.by("run-phase").text_content())
            if not self.progress_shot and live.get_attribute("data-status") == "running":
                self.screenshot("dashboard-progress.png", self.page.locator("#replan-panel"))
                self.progress_shot = True
            if live.get_attribute("data-run-id") == str(run_id) and live.get_attribute("data-status") not in (
                    "queued", "running"):
                break
            self.page.wait_for_timeout(200)
        run = self.get(f"/runs/{run_id}")
        assert run["status"] == status, run
        self.expect(live).to_have_attribute("data-status", status)
        return run, phases

    def replan(self, method: str, fraction: str = "1.0", rounds: str = "1",
               status: str = "succeeded", deploy: bool = False) -> tuple[dict, set[str]]:
        before = {r["id"] for r in self.get(f"/scenarios/{self.scenario_id()}/runs")}
        self.page.select_option("#method", method)
        self.page.set_checked("#deploy-on-success", deploy)
        self.page.fill("#update-fraction", fraction)
        self.page.fill("#rounds", rounds)
        self.by("replan-button").click()
        deadline = time.monotonic() + 20
        while not (new := [r for r in self.get(f"/scenarios/{self.scenario_id()}/runs") if r["id"] not in before]):
            assert time.monotonic() < deadline, "the Replan button started no run"
            time.sleep(0.1)
        assert len(new) == 1 and new[0]["method"] == method and new[0]["params"]["update_fraction"] == float(fraction)
        self.expect(self.by("run-live")).to_have_attribute("data-run-id", str(new[0]["id"]))
        return self.wait_for_run(new[0]["id"], status)

    def scenario_id(self) -> int:
        return int(self.page.evaluate("sessionStorage.getItem('mase.scenarioId')"))


@pytest.fixture
def dash(browser, service, playwright_api, request):
    playwright_api.expect.set_options(timeout=20_000)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    dashboard = Dashboard(page, service, playwright_api.expect)
    yield dashboard
    try:  # the page as the test left it (useful when it failed)
        dashboard.screenshot(f"dashboard-{request.node.name}.png")
    finally:
        context.close()


def number(locator, value: float, percent: bool = False) -> None:
    """The element carries the API's value exactly (data-value) and shows it rounded."""
    from playwright.sync_api import expect

    expect(locator).to_have_attribute("data-value", re.compile(r"."))  # filled in, not a placeholder
    raw = locator.get_attribute("data-value")
    assert raw not in (None, "") and float(raw) == value, (raw, value)
    text = locator.text_content().strip()
    if percent:
        assert text.endswith("%") and abs(float(text[:-1]) / 100 - value) <= 0.0005 + 1e-12, (text, value)
    else:
        assert abs(float(text) - value) <= 0.0005 + 1e-12, (text, value)


# -- tests -----------------------------------------------------------------------------------
def test_sign_in_by_fragment_form_and_refused_tokens(dash):
    page, expect = dash.page, dash.expect
    dash.open("not-a-token")
    expect(dash.by("auth-error")).to_contain_text("401")
    expect(dash.by("auth-error")).to_contain_text("unknown or revoked token")
    expect(page.locator("#app")).to_be_hidden()
    assert "token" not in page.url  # the fragment left the address bar
    dash.screenshot("dashboard-refused-token.png")

    demo = next(s for s in dash.get("/scenarios") if s["name"] == DEMO)
    robot = dash.api("POST", f"/scenarios/{demo['id']}/tokens", json={"robot_id": "tb1"}).json()["token"]
    dash.open(robot)
    expect(dash.by("auth-error")).to_contain_text("403")
    expect(dash.by("auth-error")).to_contain_text("this needs an operator token")
    assert page.evaluate("sessionStorage.getItem('mase.operatorToken')") is None

    page.fill("#token-input", OPERATOR)
    page.click("#login-button")
    names = [s["name"] for s in dash.get("/scenarios")]
    expect(dash.by("scenario-item").locator(".scenario-name")).to_have_text(names)
    me = dash.get("/me")  # the operator's name from the tokens file (a generated one here)
    expect(dash.by("auth-status")).to_have_text(f"Signed in as operator {me['name']}")
    assert page.evaluate("sessionStorage.getItem('mase.operatorToken')") == OPERATOR

    page.reload()  # the token stays for the tab
    expect(dash.by("scenario-item")).to_have_count(len(names))
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('mase.operatorToken')") is None
    assert not dash.errors


def test_map_replan_results_and_compare(dash):
    page, expect = dash.page, dash.expect
    scenario = dash.open_demo()

    # the map: walls, NSE zones with a legend, each robot's start and planned path
    drawn = dash.get(f"/scenarios/{scenario}/map")
    svg = dash.by("map-svg")
    walls = [(x, y) for y, row in enumerate(drawn["grid"]) for x, c in enumerate(row)
             if c in "#X" and not drawn["passable"][y][x]]
    expect(svg.get_by_test_id("wall")).to_have_count(len(walls))
    assert drawn["zones"]
    for zone in drawn["zones"]:
        expect(svg.locator(f'[data-testid=zone][data-zone="{zone["name"]}"] rect')).to_have_count(len(zone["cells"]))
    expect(dash.by("legend-zone")).to_have_text([f"NSE zone {z['name']}" for z in drawn["zones"]])
    assert {r["id"] for r in drawn["robots"]} == {"tb1", "tb2"}
    for robot in drawn["robots"]:
        group = svg.locator(f'[data-testid=robot-path][data-robot="{robot["id"]}"]')
        expect(group.locator("text")).to_have_text(robot["id"])
        expect(group.get_by_test_id("robot-start")).to_have_count(1)
        points = group.locator("polyline").get_attribute("points").split()
        cells = [[int(float(v) // CELL) for v in p.split(",")] for p in points]
        assert cells == robot["path"], robot["id"]

    # Replan with live progress (deployed when it succeeds: the box ticked; no shipped scenario
    # deploys by itself); the result, the runs table and the map follow the API
    assert dash.get(f"/scenarios/{scenario}")["auto_deploy"] is False
    expect(dash.by("deploy-on-success")).not_to_be_checked()
    # a push of the same scenario (here a rename, undone) keeps the operator's tick
    page.set_checked("#deploy-on-success", True)
    for name in (f"{DEMO} (renamed)", DEMO):
        assert dash.api("PATCH", f"/scenarios/{scenario}", json={"name": name}).status_code == 200
        expect(dash.by("scenario-title")).to_have_text(name)
        expect(dash.by("deploy-on-success")).to_be_checked()
    run, phases = dash.replan("gen-recon-cf", deploy=True)
    assert run["deploy_on_success"] is True
    took = datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["created_at"])
    if took.total_seconds() > 1.5:  # a run faster than the page's 0.5 s polling may finish unseen
        assert phases - {"", "queued"}, phases  # the phase was shown while it ran
    expect(dash.by("run-progress")).to_have_attribute("aria-valuenow", "100")
    expect(dash.by("run-phase")).to_have_text(run["phase"])
    expect(dash.by("replan-button")).to_be_enabled()
    summary = run["summary"]
    expect(page.locator("#result-panel")).to_have_attribute("data-run-id", str(run["id"]))
    number(dash.by("nse-before"), summary["nse_before"])
    number(dash.by("nse-after"), summary["nse_after"])
    number(dash.by("rate-before"), summary["nse_state_rate_before"], percent=True)
    number(dash.by("rate-after"), summary["nse_state_rate_after"], percent=True)

    row = page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]')
    expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
    expect(row.get_by_test_id("run-method")).to_have_text("gen-recon-cf")
    number(row.get_by_test_id("run-nse-before"), summary["nse_before"])
    number(row.get_by_test_id("run-nse-after"), summary["nse_after"])
    number(row.get_by_test_id("run-rate-before"), summary["nse_state_rate_before"], percent=True)
    number(row.get_by_test_id("run-rate-after"), summary["nse_state_rate_after"], percent=True)
    expect(row.get_by_test_id("run-updated")).to_have_text(str(len(summary["updated"])))

    bars = dash.by("blame-chart").get_by_test_id("blame-bar")
    expect(bars).to_have_count(len(run["robots"]))
    for robot in run["robots"]:
        bar = dash.by("blame-chart").locator(f'[data-testid=blame-bar][data-robot="{robot["id"]}"]')
        assert float(bar.get_attribute("data-value")) == robot["blame"]
        assert bar.get_attribute("data-updated") == str(robot["updated"]).lower()
        assert (robot["id"] in summary["updated"]) == robot["updated"]

    redrawn = dash.get(f"/scenarios/{scenario}/map")
    assert redrawn["run_id"] == run["id"]
    expect(dash.by("map-source")).to_have_attribute("data-run-id", str(run["id"]))
    for robot in redrawn["robots"]:
        points = svg.locator(f'[data-testid=robot-path][data-robot="{robot["id"]}"] polyline').get_attribute("points")
        assert [[int(float(v) // CELL) for v in p.split(",")] for p in points.split()] == robot["path"]

    # a second run, then both compared side by side
    second, _ = dash.replan("difference-reward")
    expect(page.locator(f'[data-testid=run-row][data-run-id="{second["id"]}"]').get_by_test_id("run-status")) \
        .to_have_text("succeeded")
    succeeded = [r for r in dash.get(f"/scenarios/{scenario}/runs") if r["status"] == "succeeded"]
    charted = dash.by("nse-chart-run")
    expect(charted).to_have_count(len(succeeded))
    for i, expected in enumerate(succeeded):
        expect(charted.nth(i)).to_have_attribute("data-run-id", str(expected["id"]))
        assert float(charted.nth(i).get_attribute("data-before")) == expected["summary"]["nse_before"]
        assert float(charted.nth(i).get_attribute("data-after")) == expected["summary"]["nse_after"]
    for run_id in (run["id"], second["id"]):
        page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]').get_by_test_id("run-compare").check()
    dash.by("compare-button").click()
    comparison = dash.get(f"/runs/compare?ids={run['id']}&ids={second['id']}")
    compared = dash.by("compare-table").get_by_test_id("compare-row")
    expect(compared).to_have_count(2)
    for i, expected in enumerate(comparison["runs"]):
        expect(compared.nth(i)).to_have_attribute("data-run-id", str(expected["id"]))
        number(compared.nth(i).get_by_test_id("compare-nse-before"), expected["summary"]["nse_before"])
        number(compared.nth(i).get_by_test_id("compare-nse-after"), expected["summary"]["nse_after"])
    best = dash.by("compare-table").locator("tr:has([data-testid=best-run])")
    expect(best).to_have_attribute("data-run-id", str(comparison["best_run_id"]))

    page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]').click()  # back to the first run's result
    expect(page.locator("#result-panel")).to_have_attribute("data-run-id", str(run["id"]))
    number(dash.by("nse-after"), summary["nse_after"])
    dash.screenshot("dashboard.png")
    assert not dash.errors


def test_an_imported_policy_file_in_the_runs_table(dash):
    """A policy file imported over the API (a run's own policies, labelled as a learner's) is a
    run like the others in the table: method "import (its learner)", no update fraction or
    rounds, NSE before and after; its history line; selecting it shows its result."""
    page, expect = dash.page, dash.expect
    scenario = dash.open_demo()
    done = [r for r in dash.get(f"/scenarios/{scenario}/runs") if r["status"] == "succeeded"]
    if not done:
        started = dash.api("POST", f"/scenarios/{scenario}/runs", json={"method": "naive", "deploy": False})
        assert started.status_code == 202, started.text
        done = [dash.wait_for_run(started.json()["id"])[0]]
    document = dash.get(f"/runs/{done[-1]['id']}/policies")
    document["source"] = {"command": "dashboard test", "learner": "hand-made"}
    # not deployed on success (the demo scenario auto-deploys): the other tests' robots keep their policies
    response = dash.api("POST", f"/scenarios/{scenario}/runs/import?deploy=false", json=document)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert response.json()["deploy_on_success"] is False
    deadline = time.monotonic() + RUN_TIMEOUT
    while (run := dash.get(f"/runs/{run_id}"))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "succeeded", run
    row = page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
    expect(row.get_by_test_id("run-method")).to_have_text("import (hand-made)")
    expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
    expect(row.get_by_test_id("run-fraction")).to_have_text("—")
    expect(row.get_by_test_id("run-rounds")).to_have_text("—")
    expect(row.get_by_test_id("run-by")).to_have_text(run["created_by"])
    number(row.get_by_test_id("run-nse-before"), run["summary"]["nse_before"])
    number(row.get_by_test_id("run-nse-after"), run["summary"]["nse_after"])
    expect(page.locator(f'[data-testid=history-row][data-kind=run_imported][data-run-id="{run_id}"]')) \
        .to_contain_text(f"imported a policy file as run #{run_id} (hand-made, 2 entries)")
    row.click()
    expect(page.locator("#result-panel")).to_have_attribute("data-run-id", str(run_id))
    expect(page.locator("#result-run")).to_contain_text(f"run #{run_id} · import (hand-made) · succeeded")
    number(dash.by("nse-after"), run["summary"]["nse_after"])
    assert not dash.errors


def test_live_monitor_polls_reported_states(dash):
    expect = dash.expect
    scenario = dash.open_demo()
    before = dash.get(f"/scenarios/{scenario}/monitor")
    expect(dash.by("monitor-observations")).to_have_text(str(before["observations"]))
    # both robots report a reachable state in the reef, carrying sample A: an NSE
    for robot in ("tb1", "tb2"):
        policy = dash.get(f"/scenarios/{scenario}/robots/{robot}/policy")
        zone, sample = policy["features"].index("coral"), policy["features"].index("sample")
        reef = policy["feature_values"][zone].index("reef")
        a = policy["feature_values"][sample].index("A")
        state = next(s for s, done in zip(policy["states"], policy["terminal"])
                     if s[zone] == reef and s[sample] == a and not done)
        response = dash.api("POST", f"/scenarios/{scenario}/robots/{robot}/state", json={"state": state})
        assert response.status_code == 200, response.text
    monitor = dash.get(f"/scenarios/{scenario}/monitor")
    assert monitor["zones_in_violation"] and monitor["current_penalty"] > 0
    # the panel polls every few seconds: no reload needed
    expect(dash.by("monitor-observations")).to_have_text(str(monitor["observations"]), timeout=10_000)
    number(dash.by("monitor-penalty"), monitor["current_penalty"])
    number(dash.by("monitor-rate"), monitor["nse_state_rate"], percent=True)
    expect(dash.by("monitor-robots")).to_have_text(f"{len(monitor['reporting_robots'])} of 2")
    for zone in monitor["zones_in_violation"]:
        expect(dash.by("monitor-zones").locator(f'[data-zone="{zone}"]')).to_contain_text("violation")
    assert not dash.errors


def test_rule_editor_makes_versions_and_shows_api_errors(dash):
    page, expect = dash.page, dash.expect
    scenario = dash.open_demo()
    versions = dash.get(f"/scenarios/{scenario}/rules")
    newest = versions[-1]
    rows = dash.by("rule-row")
    expect(rows).to_have_count(len(newest["rules"]))
    expect(dash.by("rule-version")).to_have_count(len(versions))
    expect(dash.by("min-count")).to_have_value(str(newest["min_count"]))

    dash.by("add-rule").click()
    expect(rows).to_have_count(len(newest["rules"]) + 1)
    rows.last.get_by_test_id("remove-rule").click()
    expect(rows).to_have_count(len(newest["rules"]))

    def refused(edit: dict, field: str, text: str) -> None:
        """Typing `text` into the first rule's `field` is refused with the API's own message."""
        body = {"rules": [dict(newest["rules"][0], **edit)] + newest["rules"][1:], "min_count": newest["min_count"],
                "note": ""}
        response = dash.api("POST", f"/scenarios/{scenario}/rules", json=body)
        assert response.status_code == 422
        message = response.json()["detail"][0]["msg"]
        cell = rows.first.locator(f'[data-field="{field}"]')
        cell.fill(text)
        dash.by("save-rules").click()
        expect(dash.by("rules-errors")).to_contain_text(message)
        expect(cell).to_have_attribute("aria-invalid", "true")
        cell.fill(str(newest["rules"][0][field]))

    refused({"value": "Z"}, "value", "Z")  # not a value of the dynamic feature
    refused({"weight": -1}, "weight", "-1")  # weights are positive
    assert len(dash.get(f"/scenarios/{scenario}/rules")) == len(versions)  # nothing was stored

    rows.first.locator('[data-field="weight"]').fill("3.5")
    dash.by("min-count").fill("2")
    dash.by("rules-note").fill("dashboard test: heavier sample A")
    dash.by("save-rules").click()
    version = newest["version"] + 1
    expect(dash.by("rules-saved")).to_contain_text(f"version {version}")
    expect(dash.by("rule-version")).to_have_count(len(versions) + 1)
    expect(dash.by("rule-version").first).to_have_attribute("data-version", str(version))
    expect(dash.by("rule-version").first.get_by_test_id("rule-version-note")).to_contain_text(
        "dashboard test: heavier sample A")
    expect(dash.by("rules-errors")).to_be_hidden()
    expect(dash.by("rules-base")).to_have_attribute("data-version", str(version))
    stored = dash.get(f"/scenarios/{scenario}/rules")[-1]
    assert stored["version"] == version and stored["note"] == "dashboard test: heavier sample A"
    assert stored["rules"][0]["weight"] == 3.5 and stored["rules"][1:] == newest["rules"][1:]
    assert stored["min_count"] == 2
    expect(page.locator(f'[data-testid=scenario-item][data-id="{scenario}"]')).to_contain_text(f"rules v{version}")
    dash.screenshot("dashboard-rules.png", page.locator("#rules-panel"))
    assert not dash.errors


def test_create_scenario_failed_run_restart_and_delete(dash):
    page, expect = dash.page, dash.expect
    dash.open()
    expect(dash.by("scenario-list")).to_be_visible()
    count = len(dash.get("/scenarios"))
    expect(page.locator("#create-map option")).to_have_count(len(dash.get("/maps")))

    response = dash.api("POST", "/scenarios", json={"map": "salp-demo", "robots": 0})
    message = response.json()["detail"][0]["msg"]
    page.select_option("#create-map", "salp-demo")
    page.fill("#create-robots", "0")
    page.click("#create-button")
    expect(dash.by("create-errors")).to_contain_text(message)

    name = "dashboard <b>scratch</b> & co"  # shown as text, never parsed as HTML
    page.fill("#create-name", name)
    page.fill("#create-robots", "1")
    page.click("#create-button")
    expect(dash.by("scenario-title")).to_have_text(name)
    expect(page.locator("#scenario-title b, #scenario-list b")).to_have_count(0)
    expect(dash.by("scenario-item")).to_have_count(count + 1)
    created = next(s for s in dash.get("/scenarios") if s["name"] == name)
    assert created["n_robots"] == 1 and created["map_name"] == "salp-demo.map"
    expect(dash.by("map-svg").get_by_test_id("robot-path")).to_have_count(1)

    # exchange values need two robots: the run fails, says why, and can be restarted
    run, _ = dash.replan("exchange", status="failed")
    expect(dash.by("run-error")).to_contain_text(run["error"])
    expect(page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]').get_by_test_id("run-status")) \
        .to_have_text("failed")
    # the second attempt fails again at once, so its running state may last only a moment: every
    # change of the button's `hidden` is recorded, not sampled
    page.evaluate("""() => {
        const button = document.getElementById("restart-button");
        window.restartHidden = [];
        new MutationObserver(() => window.restartHidden.push(button.hidden))
            .observe(button, {attributes: true, attributeFilter: ["hidden"]});
    }""")
    dash.by("restart-button").click()
    expect(dash.by("run-live")).to_contain_text("attempt 2")  # the second attempt is followed live
    page.wait_for_function("() => window.restartHidden.includes(true)")  # hidden while it ran
    assert dash.get(f"/runs/{run['id']}")["attempts"] == 2
    # (it fails again in the background; the service stops at the end of this module)

    # delete a scenario (one without an active run)
    page.fill("#create-name", "dashboard scratch 2")
    page.fill("#create-robots", "2")
    page.click("#create-button")
    expect(dash.by("scenario-title")).to_have_text("dashboard scratch 2")
    expect(dash.by("scenario-item")).to_have_count(count + 2)
    second = next(s for s in dash.get("/scenarios") if s["name"] == "dashboard scratch 2")
    page.click("#delete-button")
    expect(page.locator("#delete-question")).to_have_text("Delete “dashboard scratch 2” and all its runs?")
    page.click("#delete-confirm-button")
    expect(dash.by("scenario-item")).to_have_count(count + 1)
    assert all(s["id"] != second["id"] for s in dash.get("/scenarios"))
    assert not dash.errors


def test_an_answer_older_than_the_pushed_events_does_not_undo_them(dash):
    """The page asks for a run it starts (GET /runs/{id}) while the push channel brings the run's
    events. Here that answer is held back until the run has failed and its events have come: the
    page must keep the pushed "failed", not go back to the held answer's "queued" (and then wait
    for ever, with no event left to come). A run can fail before the page asks: then the answer
    is not older and the replan is tried again (up to 6 runs)."""
    import re as _re

    from service_support import wait_until_planned

    with httpx.Client(base_url=dash.service.url, headers=AUTH, timeout=30) as client:
        created = client.post("/api/v1/scenarios", json={"map": "salp-demo", "robots": 1, "name": "held answer"})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        wait_until_planned(client, sid)
    held: dict[int, str] = {}  # run id -> the status in its first (held) answer

    def hold(route):
        run_id = int(route.request.url.rsplit("/", 1)[1])
        if run_id in held:  # only a run's first answer is held
            route.continue_()
            return
        held[run_id] = "asked"
        response = route.fetch()  # asked now: the run has just been queued, or has failed already
        held[run_id] = response.json()["status"]
        deadline = time.monotonic() + 60
        while dash.get(f"/runs/{run_id}")["status"] not in ("failed", "succeeded") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the failure's events reach the page first
        route.fulfill(response=response)

    dash.page.route(_re.compile(r".*/api/v1/runs/\d+$"), hold)
    dash.open()
    dash.page.locator(f'[data-testid=scenario-item][data-id="{sid}"]').click()
    dash.expect(dash.by("scenario-title")).to_have_text("held answer")
    for _ in range(6):
        run, _ = dash.replan("exchange", status="failed")  # exchange values need two robots: it fails at once
        dash.expect(dash.by("run-error")).to_contain_text(run["error"])
        if held.get(run["id"]) in ("queued", "running"):
            break
    assert any(status in ("queued", "running") for status in held.values()), held  # an older answer was held
    assert not dash.errors, dash.errors
