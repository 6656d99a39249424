"""The operator's console in headless Chromium (Playwright) against one real `mase serve`:
robots' markers move as another client reports states (no reload), an alert appears past the
tolerance and goes when acknowledged, a run started over the API appears and finishes in the
open tab, deploy / roll back / undeploy from the page change what robots are served, a scenario
from an uploaded map and a bad map's line and column, a 100-robot fleet that stays readable
(test-artifacts/console-100-robots.png), and /docs with the network unplugged. Numbers shown
are checked against the API's; for a finished run, every one of them with its unit. Two tabs
on one scenario follow runs started over the API and every deployment; without EventSource
the page polls and still follows robots and runs; the export buttons download the API's files."""
from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from service_support import AUTH, OPERATOR, ROOT, ServerProcess, fresh_database_url, wait_for_run, wait_until_planned
from test_dashboard import ARTIFACTS, browser, number, playwright_api  # noqa: F401 (browser, playwright_api: fixtures)

pytestmark = pytest.mark.service
DEMO = 1


@pytest.fixture(scope="module")
def sync_api(playwright_api):
    playwright_api.expect.set_options(timeout=20_000)
    return playwright_api


@pytest.fixture(scope="module")
def service(tmp_path_factory, browser):
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "tokens").write_text(f"{OPERATOR} carol\n")
    server = ServerProcess(tmp, fresh_database_url(tmp), env={"MASE_ACCESS_LOG": "0"}).start()
    with server.client() as client:
        wait_until_planned(client, DEMO)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser, service, request):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"console-{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors


def api(service, method, path, **kwargs):
    response = httpx.request(method, f"{service.url}/api/v1{path}", headers=AUTH, timeout=30, **kwargs)
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def open_scenario(page, service, sync_api, scenario_id: int) -> None:
    page.goto("about:blank")  # a fresh load: the same URL with another hash would not reload
    page.goto(f"{service.url}/dashboard#token={OPERATOR}")
    page.locator(f'[data-testid=scenario-item][data-id="{scenario_id}"]').click()
    # the page has switched to it (on a busy machine the previous scenario's map is still up a while)
    sync_api.expect(page.locator("#scenario-meta")).to_contain_text(f"#{scenario_id} ·", timeout=60_000)
    sync_api.expect(page.get_by_test_id("map-svg")).to_be_visible()
    sync_api.expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live")


def state_of(policy: dict, reef: bool) -> list[int]:
    zone, sample = policy["features"].index("coral"), policy["features"].index("sample")
    reef_value, a = policy["feature_values"][zone].index("reef"), policy["feature_values"][sample].index("A")
    return next(s for s, done in zip(policy["states"], policy["terminal"]) if not done and (
        (s[zone] == reef_value and s[sample] == a) if reef else s[zone] != reef_value and s != policy["states"][
            policy["start"]]))


def test_live_markers_and_an_acknowledged_alert(page, service, sync_api):
    expect = sync_api.expect
    api(service, "DELETE", f"/scenarios/{DEMO}/observations")
    open_scenario(page, service, sync_api, DEMO)
    marker = page.locator('[data-testid=robot-marker][data-robot="tb1"]')
    start = api(service, "GET", f"/scenarios/{DEMO}")["robots"][0]["start"]
    expect(marker).to_have_attribute("data-x", str(start[0]))
    expect(marker).to_have_class(re.compile("unreported"))
    policies = {r: api(service, "GET", f"/scenarios/{DEMO}/robots/{r}/policy") for r in ("tb1", "tb2")}
    # a second client (a robot) reports: the marker moves, without a reload
    away = state_of(policies["tb1"], reef=False)
    api(service, "POST", f"/scenarios/{DEMO}/robots/tb1/state", json={"state": away})
    expect(marker).to_have_attribute("data-x", str(away[0]))
    expect(marker).to_have_attribute("data-y", str(away[1]))
    row = page.locator('[data-testid=robot-row][data-robot="tb1"]')
    expect(row.get_by_test_id("robot-state")).to_contain_text(f"({away[0]}, {away[1]})")
    expect(row.get_by_test_id("robot-last-seen")).to_contain_text("s ago")
    assert page.evaluate("document.querySelectorAll('[data-testid=alert]').length") == 0
    # both in the reef with sample A: over the tolerance (0), an alert is pushed
    for robot in ("tb1", "tb2"):
        api(service, "POST", f"/scenarios/{DEMO}/robots/{robot}/state", json={"state": state_of(policies[robot], True)})
    alert = page.locator('[data-testid=alert][data-zone="reef"]')
    expect(alert).to_be_visible()
    [served] = api(service, "GET", f"/scenarios/{DEMO}/alerts")
    assert float(alert.get_by_test_id("alert-penalty").get_attribute("data-value")) == served["penalty"]
    expect(marker).to_have_attribute("data-violating", "true")
    monitor = api(service, "GET", f"/scenarios/{DEMO}/monitor")
    number(page.get_by_test_id("monitor-penalty"), monitor["current_penalty"])
    expect(page.get_by_test_id("monitor-observations")).to_have_text(str(monitor["observations"]))
    alert.get_by_test_id("alert-ack").click()
    expect(page.get_by_test_id("alert")).to_have_count(0)
    assert api(service, "GET", f"/scenarios/{DEMO}/alerts") == []
    acked = api(service, "GET", f"/scenarios/{DEMO}/alerts?state=all")[0]
    assert acked["acknowledged_by"] == "carol"
    expect(page.locator('[data-testid=history-row][data-kind="alert_acknowledged"]').first).to_contain_text("carol")


def test_a_run_from_the_api_appears_then_deploy_roll_back_undeploy(page, service, sync_api):
    expect = sync_api.expect
    api(service, "POST", f"/scenarios/{DEMO}/undeploy")
    open_scenario(page, service, sync_api, DEMO)
    first = api(service, "POST", f"/scenarios/{DEMO}/runs",
                json={"method": "gen-recon-cf", "update_fraction": 1.0, "rounds": 1, "deploy": False})
    # started elsewhere: the open tab shows it and follows it to the end
    expect(page.locator(f'[data-testid=run-row][data-run-id="{first["id"]}"]')).to_be_visible()
    expect(page.get_by_test_id("run-live")).to_have_attribute("data-run-id", str(first["id"]))
    expect(page.get_by_test_id("run-live")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    first = wait_for_run(httpx.Client(base_url=service.url), first["id"])
    row = page.locator(f'[data-testid=run-row][data-run-id="{first["id"]}"]')
    expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
    number(row.get_by_test_id("run-nse-after"), first["summary"]["nse_after"])
    expect(row.get_by_test_id("run-by")).to_have_text("carol")
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb1/policy")["run_id"] is None  # a proposal

    # what changed and why, as the API says
    row.click()
    explained = api(service, "GET", f"/runs/{first['id']}/explain")
    expect(page.get_by_test_id("explain")).to_have_attribute("data-run-id", str(first["id"]))
    for zone, value in explained["per_zone_before"].items():
        number(page.locator(f'[data-testid=zone-row][data-zone="{zone}"]').get_by_test_id("zone-before"), value)
        number(page.locator(f'[data-testid=zone-row][data-zone="{zone}"]').get_by_test_id("zone-after"),
               explained["per_zone_after"][zone])
    assert json.loads(page.get_by_test_id("timeline-after").get_attribute("data-values")) == explained["per_step_after"]
    for robot in explained["robots"]:
        expect(page.locator(f'[data-testid=why-row][data-robot="{robot["id"]}"]').get_by_test_id("why-reason")) \
            .to_have_text(robot["reason"])
    page.select_option("#heat-mode", "before")
    heat = page.get_by_test_id("heat-cell")
    expect(heat).to_have_count(len(explained["cells"]))
    for cell in explained["cells"][:5]:
        shown = page.locator(f'[data-testid=heat-cell][data-x="{cell["x"]}"][data-y="{cell["y"]}"]')
        assert float(shown.get_attribute("data-value")) == cell["before"]
    updated = [r["id"] for r in explained["robots"] if r["updated"]]
    expect(page.get_by_test_id("change")).to_have_count(len(updated))

    # deploy from the page: robots are served the run's policies
    page.get_by_test_id("deploy-button").click()
    expect(page.get_by_test_id("deployed-label")).to_have_attribute("data-run-id", str(first["id"]))
    expect(row.get_by_test_id("run-deployed")).to_be_visible()
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb1/policy")["run_id"] == first["id"]

    # a second run deployed over the API (the tab follows), then rolled back from the page
    second = api(service, "POST", f"/scenarios/{DEMO}/runs",
                 json={"method": "difference-reward", "update_fraction": 1.0, "rounds": 1, "deploy": True})
    expect(page.get_by_test_id("deployed-label")).to_have_attribute("data-run-id", str(second["id"]), timeout=90_000)
    assert api(service, "GET", f"/runs/{second['id']}")["base_run_id"] == first["id"]
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb2/policy")["run_id"] == second["id"]
    row.click()
    expect(page.get_by_test_id("deploy-button")).to_have_text(f"Roll back to run #{first['id']}")
    page.get_by_test_id("deploy-button").click()
    expect(page.get_by_test_id("deployed-label")).to_have_attribute("data-run-id", str(first["id"]))
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb2/policy")["run_id"] == first["id"]
    page.get_by_test_id("undeploy-button").click()
    expect(page.get_by_test_id("deployed-label")).to_have_attribute("data-run-id", "")
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb2/policy")["run_id"] is None
    kinds = [e["kind"] for e in api(service, "GET", f"/scenarios/{DEMO}/history")]
    assert kinds[-3:] == ["deployed", "rolled_back", "undeployed"] or kinds[-4:] == [
        "deployed", "deployed", "rolled_back", "undeployed"]
    expect(page.locator('[data-testid=history-row][data-kind="rolled_back"]').first).to_contain_text("carol")


BAD_MAP = "[map]\ndomain = salp\n[grid]\n#?#\n"


def test_scenario_from_an_uploaded_map_and_a_bad_one(page, service, sync_api, tmp_path):
    expect = sync_api.expect
    page.goto(f"{service.url}/dashboard#token={OPERATOR}")
    expect(page.get_by_test_id("scenario-list")).to_be_visible()
    good = tmp_path / "my-salp.map"
    good.write_text((ROOT / "maps/salp/salp-demo.map").read_text())
    page.set_input_files("#create-file", str(good))
    page.fill("#create-name", "uploaded salp")
    page.fill("#create-robots", "2")
    page.click("#create-button")
    expect(page.get_by_test_id("scenario-title")).to_have_text("uploaded salp")
    created = next(s for s in api(service, "GET", "/scenarios") if s["name"] == "uploaded salp")
    assert created["map_name"] == "inline.map" and created["n_robots"] == 2
    expect(page.get_by_test_id("map-svg")).to_be_visible()
    bad = tmp_path / "broken.map"
    bad.write_text(BAD_MAP)
    page.set_input_files("#create-file", str(bad))
    page.click("#create-button")
    expect(page.get_by_test_id("create-errors")).to_contain_text("broken.map, line 4, column 2")
    expect(page.get_by_test_id("create-errors")).to_contain_text("unknown symbol '?'")
    # a robot token from the page, shown once
    page.select_option("#token-robot", "tb2")
    page.get_by_test_id("token-button").click()
    expect(page.get_by_test_id("token-new")).to_be_visible()
    expect(page.get_by_test_id("token-row")).to_have_count(1)
    token = page.get_by_test_id("token-new-value").text_content()
    me = httpx.get(f"{service.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["role"] == "robot" and me["robot_id"] == "tb2" and me["scenario_id"] == created["id"]
    page.get_by_test_id("token-revoke").first.click()
    expect(page.get_by_test_id("token-row")).to_have_count(0)
    time.sleep(0.5)
    assert httpx.get(f"{service.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    options = page.locator("#method option").all_text_contents()
    assert options == [m["name"] for m in api(service, "GET", "/methods")] and "exchange-logs" in options


def test_hundred_robots_stay_readable(page, service, sync_api):
    expect = sync_api.expect
    created = api(service, "POST", "/scenarios", json={"map": "salp-1", "robots": 100, "name": "hundred robots"})
    with httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as client:
        wait_until_planned(client, created["id"])
        for k, robot in enumerate(created["robots"]):  # every robot somewhere along its planned path
            policy = client.get(f"/api/v1/scenarios/{created['id']}/robots/{robot['id']}/policy").json()
            live = [s for s, done in zip(policy["states"], policy["terminal"]) if not done]
            client.post(f"/api/v1/scenarios/{created['id']}/robots/{robot['id']}/state",
                        json={"state": live[(7 * k) % len(live)]}).raise_for_status()
    open_scenario(page, service, sync_api, created["id"])
    expect(page.get_by_test_id("robot-marker")).to_have_count(100, timeout=60_000)
    expect(page.locator("[data-testid=robot-marker].reported")).to_have_count(100)
    expect(page.get_by_test_id("robot-path")).to_have_count(0)  # no pile of 100 paths
    for robot in ("r3", "r10", "r42", "r77"):
        page.locator(f'[data-testid=robot-row][data-robot="{robot}"]').click()
    expect(page.get_by_test_id("robot-path")).to_have_count(4)
    colours = [g.get_attribute("data-color") for g in page.get_by_test_id("robot-path").all()]
    assert len(set(colours)) == 4
    expect(page.locator('[data-testid=robot-marker][data-robot="r77"]')).to_have_class(re.compile("highlighted"))
    boxes = page.evaluate("""[...document.querySelectorAll('[data-testid=marker-label]')].map(t => {
        const b = t.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; })""")
    assert len(boxes) >= 20  # many labelled, none overlapping
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] - 0.5 and a[2] > b[0] + 0.5 and a[1] < b[3] - 0.5 and a[3] > b[1] + 0.5), (a, b)
    monitor = api(service, "GET", f"/scenarios/{created['id']}/monitor")
    expect(page.get_by_test_id("monitor-robots")).to_have_text("100 of 100")
    number(page.get_by_test_id("monitor-penalty"), monitor["current_penalty"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#map-panel").screenshot(path=str(ARTIFACTS / "console-100-robots.png"))


def test_docs_render_with_the_network_unplugged(browser, service):
    context = browser.new_context()
    outside = []

    def only_local(route) -> None:
        host = route.request.url.split("/")[2].split(":")[0]
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    try:
        page.goto(f"{service.url}/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() > 30
        assert page.get_by_text("/api/v1/scenarios/{scenario_id}/events", exact=True).count() >= 1
        assert outside == [], outside  # Swagger UI asked for nothing outside this machine
        page.goto(f"{service.url}/redoc")
        page.wait_for_selector("[role=menuitem], .menu-content", timeout=30_000)
        assert page.get_by_text("Start a mitigation run (replanning) in the background").count() >= 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-redoc-offline.png"))
        # ReDoc renders offline too; its bundle still asks its CDN for the "powered by" logo only
        assert all(url.startswith("https://cdn.redoc.ly/redoc/logo") for url in outside), outside
    finally:
        context.close()


# -- several tabs, the polling fallback, every number, the exports --------------------------------
@pytest.fixture
def tabs(browser, service, request):
    """Open tabs (pages of one browser context, as tabs of one window): `tabs(n)` gives n of them;
    each is screenshotted at the end and must have raised no page error."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pages, errors = [], []

    def make(n: int, init_script: str | None = None):
        if init_script:
            context.add_init_script(init_script)
        for _ in range(n):
            p = context.new_page()
            p.set_default_timeout(20_000)
            p.on("pageerror", lambda error, k=len(pages): errors.append(f"tab {k}: {error}"))
            pages.append(p)
        return pages[-n:]

    yield make
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        for k, p in enumerate(pages):
            p.screenshot(path=str(ARTIFACTS / f"console-{request.node.name}-tab{k}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, errors


def start_run(service, **body) -> dict:
    return api(service, "POST", f"/scenarios/{DEMO}/runs",
               json={"method": "gen-recon-cf", "update_fraction": 1.0, "rounds": 1, "deploy": False, **body})


def deployed_marks(page, sync_api, run_id) -> None:
    """The runs table marks `run_id`'s row deployed, and no other (None: no row)."""
    marks = page.get_by_test_id("run-deployed")
    if run_id is None:
        sync_api.expect(marks).to_have_count(0)
    else:
        sync_api.expect(page.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
                        .get_by_test_id("run-deployed")).to_be_visible()
        sync_api.expect(marks).to_have_count(1)
    sync_api.expect(page.get_by_test_id("deployed-label")).to_have_attribute("data-run-id", str(run_id or ""))


def test_two_tabs_follow_runs_from_the_api_and_every_deployment(tabs, service, sync_api):
    """Two tabs on the same scenario: two runs started over the API appear in both and finish in
    both; a deploy from one tab, a roll back over the API and an undeploy from the other tab move
    the runs table's deployed mark (and the header) in both."""
    expect = sync_api.expect
    api(service, "POST", f"/scenarios/{DEMO}/undeploy")
    both = tabs(2)
    for tab in both:
        open_scenario(tab, service, sync_api, DEMO)
        deployed_marks(tab, sync_api, None)
    first, second = start_run(service), start_run(service, method="difference-reward")
    for tab in both:
        for run in (first, second):
            expect(tab.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]')).to_be_visible()
    for tab in both:  # the second starts once the first has finished: the live panel follows it to its end
        expect(tab.get_by_test_id("run-live")).to_have_attribute("data-run-id", str(second["id"]), timeout=90_000)
        expect(tab.get_by_test_id("run-live")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    with httpx.Client(base_url=service.url) as client:
        done = {r["id"]: wait_for_run(client, r["id"]) for r in (first, second)}
    for tab in both:
        for run_id, run in done.items():
            row = tab.locator(f'[data-testid=run-row][data-run-id="{run_id}"]')
            expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
            number(row.get_by_test_id("run-nse-after"), run["summary"]["nse_after"])
    assert done[second["id"]]["base_run_id"] is None  # nothing was deployed when it started

    one, other = both
    one.locator(f'[data-testid=run-row][data-run-id="{first["id"]}"]').click()
    expect(one.get_by_test_id("deploy-button")).to_have_text(f"Deploy run #{first['id']}")
    one.get_by_test_id("deploy-button").click()
    for tab in both:
        deployed_marks(tab, sync_api, first["id"])
    assert api(service, "GET", f"/scenarios/{DEMO}/robots/tb1/policy")["run_id"] == first["id"]
    api(service, "POST", f"/runs/{second['id']}/deploy")  # over the API: both tabs follow
    for tab in both:
        deployed_marks(tab, sync_api, second["id"])
    api(service, "POST", f"/runs/{first['id']}/deploy")  # a roll back over the API
    for tab in both:
        deployed_marks(tab, sync_api, first["id"])
    other.get_by_test_id("undeploy-button").click()  # from the other tab
    for tab in both:
        deployed_marks(tab, sync_api, None)
    assert api(service, "GET", f"/scenarios/{DEMO}")["deployed_run_id"] is None


def test_without_event_source_the_page_polls(tabs, service, sync_api):
    """The polling fallback: with no EventSource in the page (dashboard.js then never opens the
    push channel), the page says it polls and still shows robots' reports (markers move) and a
    run started over the API, to its end."""
    expect = sync_api.expect
    api(service, "DELETE", f"/scenarios/{DEMO}/observations")
    [page] = tabs(1, init_script="delete window.EventSource")
    page.goto(f"{service.url}/dashboard#token={OPERATOR}")
    assert page.evaluate("typeof window.EventSource") == "undefined"
    page.locator(f'[data-testid=scenario-item][data-id="{DEMO}"]').click()
    expect(page.get_by_test_id("map-svg")).to_be_visible()
    status = page.get_by_test_id("live-status")
    expect(status).to_have_attribute("data-state", "polling")
    expect(page.get_by_test_id("message")).to_be_hidden()  # no error banner

    policy = api(service, "GET", f"/scenarios/{DEMO}/robots/tb1/policy")
    marker = page.locator('[data-testid=robot-marker][data-robot="tb1"]')
    expect(marker).to_have_class(re.compile("unreported"))
    cells = []
    for reef in (False, True):  # two reports, two cells: the marker follows each
        state = state_of(policy, reef=reef)
        api(service, "POST", f"/scenarios/{DEMO}/robots/tb1/state", json={"state": state})
        expect(marker).to_have_attribute("data-x", str(state[0]))
        expect(marker).to_have_attribute("data-y", str(state[1]))
        expect(marker).to_have_class(re.compile("reported"))
        cells.append(tuple(state[:2]))
    assert cells[0] != cells[1]
    expect(page.get_by_test_id("monitor-observations")).to_have_text("2")

    run = start_run(service)
    expect(page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]')).to_be_visible()
    expect(page.get_by_test_id("run-live")).to_have_attribute("data-run-id", str(run["id"]))
    expect(page.get_by_test_id("run-live")).to_have_attribute("data-status", "succeeded", timeout=90_000)
    done = wait_for_run(httpx.Client(base_url=service.url), run["id"])
    row = page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]')
    expect(row.get_by_test_id("run-status")).to_have_text("succeeded")
    number(row.get_by_test_id("run-nse-after"), done["summary"]["nse_after"])
    expect(status).to_have_attribute("data-state", "polling")  # and it never claimed to be live


def printed(text: str, value: float, digits: int, percent: bool = False) -> None:
    """`text` (its first number) is `value` printed with `digits` decimals (JavaScript's toFixed:
    within half a unit of the last digit)."""
    import re

    found = re.search(r"[−-]?\d+(?:\.(\d+))?(%?)", text)
    assert found, (text, value)
    decimals = found.group(1) or ""
    assert len(decimals) == digits, f"{text!r}: {digits} decimals expected"
    shown = float(found.group(0).replace("−", "-").rstrip("%"))
    if percent:
        assert found.group(2) == "%", text
        value *= 100
    assert abs(shown - value) <= 0.5 * 10 ** -digits + 1e-9, (text, value)


# what each kind of number is counted in; the page must say so next to it
PENALTY, STEPS = "penalty units", "steps"
UNIT_CONTEXT = """el => {
  // where the page says what a number is counted in: the element's own text and title (an SVG
  // element's <title> child), its table column's header (text and title), its figure's label,
  // and the nearest heading (h2, h3) before it in its card
  const parts = [el.textContent, el.getAttribute('title') || ''];
  const title = el.querySelector(':scope > title');
  if (title) parts.push(title.textContent);
  const cell = el.closest('td');
  if (cell) {
    const th = cell.closest('table').querySelectorAll('thead th')[[...cell.parentNode.children].indexOf(cell)];
    if (th) parts.push(th.textContent, th.title);
  }
  const figure = el.closest('.figure');
  if (figure) parts.push(figure.querySelector('.label').textContent);
  const card = el.closest('section.card');
  const before = [...card.querySelectorAll('h2, h3')].filter(
    hd => hd.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING);
  if (before.length) parts.push(before[before.length - 1].textContent);
  return parts.join(' | ');
}"""


def test_every_number_of_a_finished_run_equals_the_apis_with_its_unit(page, service, sync_api):
    """A finished run of the demo (2 robots), deployed: every number the page shows of it equals
    the API's to the printed precision, and has its unit beside it (UNIT_CONTEXT: in its text,
    title, column header, figure label or heading). The elements checked:
    - result panel: NSE before / after (J_N, 3 decimals, penalty units), NSE-state rates (%),
      change (%), "n of m robots replanned", rounds;
    - runs table row: NSE before / after, rates, updated count, change;
    - NSE chart: each run's bars (data-before/after) and their title;
    - blame chart: each robot's bar (3 decimals) and its title (blame, task regret, budget: 4
      decimals, penalty units and steps);
    - explanation: the timeline's J_N before / after (the sum of the API's per-step values), its
      top tick, each zone's before / after, each robot's blame, rank, task regret / budget (2
      decimals, steps), each round's cut-off (4 decimals, penalty units);
    - robot list: each robot's blame in the deployed run;
    - live monitor: current penalty (penalty units) and NSE-state rate, each zone's penalty."""
    expect = sync_api.expect
    run = start_run(service, rounds=2)
    with httpx.Client(base_url=service.url) as client:
        run = wait_for_run(client, run["id"])
    assert run["status"] == "succeeded", run
    api(service, "POST", f"/runs/{run['id']}/deploy")
    explained = api(service, "GET", f"/runs/{run['id']}/explain")
    summary, robots = run["summary"], {r["id"]: r for r in run["robots"]}
    open_scenario(page, service, sync_api, DEMO)
    row = page.locator(f'[data-testid=run-row][data-run-id="{run["id"]}"]')
    row.click()
    expect(page.get_by_test_id("explain")).to_have_attribute("data-run-id", str(run["id"]))
    expect(page.locator("#result-panel")).to_have_attribute("data-run-id", str(run["id"]))
    by = page.get_by_test_id
    checked = []

    def check(locator, value, digits, unit=None, percent=False, exact=True):
        """The element shows `value` (and carries it exactly, if it has a data-value) with its unit."""
        expect(locator).to_be_attached()
        text = locator.text_content()
        printed(text, value, digits, percent)
        if exact and locator.get_attribute("data-value") is not None:
            assert float(locator.get_attribute("data-value")) == value, (locator, value)
        if unit:
            context = locator.evaluate(UNIT_CONTEXT)
            assert unit in context, f"{text!r} ({value}) has no unit {unit!r} near it: {context!r}"
        checked.append(text)

    def change_of(before, after):
        return 0.0 if before == 0 else (after - before) / before * 100

    # the result panel
    check(by("nse-before"), summary["nse_before"], 3, PENALTY)
    check(by("nse-after"), summary["nse_after"], 3, PENALTY)
    check(by("rate-before"), summary["nse_state_rate_before"], 1, "%", percent=True)
    check(by("rate-after"), summary["nse_state_rate_after"], 1, "%", percent=True)
    if summary["nse_before"] > 0:
        shown = by("nse-change").text_content().replace("−", "-").replace("±", "")
        assert abs(float(shown.rstrip("%")) - change_of(summary["nse_before"], summary["nse_after"])) <= 0.5 + 1e-9
        assert shown.endswith("%")
    expect(page.locator("#result-extra")).to_contain_text(
        f"{len(summary['updated'])} of {len(run['robots'])} robots replanned · {len(summary['rounds'])} rounds")
    expect(page.locator("#result-extra")).to_contain_text("penalty units per episode")

    # its row of the runs table
    check(row.get_by_test_id("run-nse-before"), summary["nse_before"], 3, PENALTY)
    check(row.get_by_test_id("run-nse-after"), summary["nse_after"], 3, PENALTY)
    check(row.get_by_test_id("run-rate-before"), summary["nse_state_rate_before"], 1, "%", percent=True)
    check(row.get_by_test_id("run-rate-after"), summary["nse_state_rate_after"], 1, "%", percent=True)
    expect(row.get_by_test_id("run-updated")).to_have_text(str(len(summary["updated"])))
    if summary["nse_before"] > 0:
        change_cell = row.locator("td").nth(10).text_content().replace("−", "-").replace("±", "")
        assert abs(float(change_cell.rstrip("%")) - change_of(summary["nse_before"], summary["nse_after"])) <= 0.5 + 1e-9

    # the NSE chart: every succeeded run of the scenario, as the API has it
    succeeded = [r for r in api(service, "GET", f"/scenarios/{DEMO}/runs") if r["status"] == "succeeded"]
    bars = by("nse-chart-run")
    expect(bars).to_have_count(len(succeeded))
    for k, other in enumerate(succeeded):
        bar = bars.nth(k)
        assert bar.get_attribute("data-run-id") == str(other["id"])
        assert float(bar.get_attribute("data-before")) == other["summary"]["nse_before"]
        assert float(bar.get_attribute("data-after")) == other["summary"]["nse_after"]
        title = bar.locator("title").text_content()
        printed(title.split("NSE ")[1], other["summary"]["nse_before"], 3)
        printed(title.split("before, ")[1], other["summary"]["nse_after"], 3)
        assert PENALTY in bar.evaluate(UNIT_CONTEXT), "the NSE chart does not say its unit"

    # the blame chart: blame, task regret and budget of each robot
    expect(by("blame-bar")).to_have_count(len(robots))
    for robot_id, robot in robots.items():
        bar = page.locator(f'[data-testid=blame-bar][data-robot="{robot_id}"]')
        assert float(bar.get_attribute("data-value")) == robot["blame"]
        check(bar.locator("text").last, robot["blame"], 3, PENALTY, exact=False)
        title = bar.locator("title").text_content()
        printed(title.split("blame ")[1], robot["blame"], 4)
        printed(title.split("task regret ")[1], robot["task_regret"], 4)
        printed(title.split("of budget ")[1], robot["slack"], 4)
        assert "penalty units per episode" in title and title.split("of budget ")[1].split(" ")[1].startswith(STEPS)

    # the explanation: timeline, zones, each robot's why, the rounds' cut-offs
    legend = by("timeline").locator("text")
    before_text = legend.filter(has_text="before: J_N").text_content()
    after_text = legend.filter(has_text="after: J_N").text_content()
    assert sum(explained["per_step_before"]) == pytest.approx(summary["nse_before"], rel=1e-9, abs=1e-12)
    assert sum(explained["per_step_after"]) == pytest.approx(summary["nse_after"], rel=1e-9, abs=1e-12)
    check(legend.filter(has_text="before: J_N"), sum(explained["per_step_before"]), 3, PENALTY)
    check(legend.filter(has_text="after: J_N"), sum(explained["per_step_after"]), 3, PENALTY)
    assert before_text.startswith("before: J_N ") and after_text.startswith("after: J_N ")
    top = max(explained["per_step_before"] + explained["per_step_after"] + [1e-12])
    check(legend.nth(1), top, 3, PENALTY)  # the y axis' top tick
    for zone, value in explained["per_zone_before"].items():
        zone_row = page.locator(f'[data-testid=zone-row][data-zone="{zone}"]')
        check(zone_row.get_by_test_id("zone-before"), value, 3, PENALTY)
        check(zone_row.get_by_test_id("zone-after"), explained["per_zone_after"][zone], 3, PENALTY)
    expect(by("why-row")).to_have_count(len(explained["robots"]))
    for robot in explained["robots"]:
        why = page.locator(f'[data-testid=why-row][data-robot="{robot["id"]}"]')
        assert robot["blame"] == robots[robot["id"]]["blame"]
        check(why.get_by_test_id("why-blame"), robot["blame"], 3, PENALTY)
        expect(why.get_by_test_id("why-rank")).to_have_text("—" if robot["rank"] is None else str(robot["rank"]))
        regret_cell = why.locator("td").nth(3)
        regret, budget = regret_cell.text_content().split(" / ")
        printed(regret, robot["task_regret"], 2)
        printed(budget, robot["slack"], 2)
        assert robot["task_regret"] == robots[robot["id"]]["task_regret"] and robot["slack"] == robots[robot["id"]]["slack"]
        assert budget.endswith(f" {STEPS}") and STEPS in regret_cell.evaluate(UNIT_CONTEXT)
    rounds_text = by("rounds-text").text_content()
    for explained_round in explained["rounds"]:
        if explained_round["cutoff"] is not None:
            part = rounds_text.split(f"round {explained_round['round']}: ")[1]
            printed(part.split("cut-off ")[1], explained_round["cutoff"], 4)
            assert part.split("cut-off ")[1].split(" ", 1)[1].startswith(PENALTY)

    # the robot list: blame in the deployed run
    expect(by("deployed-label")).to_have_attribute("data-run-id", str(run["id"]))
    for robot_id, robot in robots.items():
        cell = page.locator(f'[data-testid=robot-row][data-robot="{robot_id}"]').get_by_test_id("robot-blame")
        expect(cell).to_have_attribute("data-value", re.compile("."))  # the deployed run's robots loaded
        check(cell, robot["blame"], 3, PENALTY)

    # the live monitor
    monitor = api(service, "GET", f"/scenarios/{DEMO}/monitor")
    check(by("monitor-penalty"), monitor["current_penalty"], 3, PENALTY)
    check(by("monitor-rate"), monitor["nse_state_rate"], 1, "%", percent=True)
    for zone, value in monitor["zone_penalties"].items():
        zone_row = page.locator(f'[data-testid=monitor-zone][data-zone="{zone}"]')
        check(zone_row.get_by_test_id("monitor-zone-penalty"), value, 3, PENALTY)
    assert len(checked) >= 20, checked


def test_export_buttons_download_what_the_api_exports(page, service, sync_api):
    """Each export button of the history panel downloads a file named as the API names it whose
    bytes are the API's export (runs and history, CSV and JSON)."""
    open_scenario(page, service, sync_api, DEMO)
    sync_api.expect(page.get_by_test_id("history-row").first).to_be_visible()
    for name in ("runs.csv", "runs.json", "history.csv", "history.json"):
        with page.expect_download() as download:
            page.locator(f'#history-panel [data-export="{name}"]').click()
        got = download.value
        assert got.suggested_filename == f"scenario-{DEMO}-{name}"
        content = open(got.path(), "rb").read()
        served = httpx.get(f"{service.url}/api/v1/scenarios/{DEMO}/export/{name}", headers=AUTH, timeout=30)
        assert served.status_code == 200
        assert content == served.content, name
        if name.endswith(".json"):
            assert json.loads(content)  # not empty: the demo has runs and a history
        else:
            assert len(content.decode().splitlines()) >= 2
