"""The web dashboard in a real headless browser (Debian's chromium and chromedriver) against a
real roxd on the real kernel with real containers: a scripted attack in one container (five
phases: one incident) and a container that keeps connecting. Each page shows that data; a
quarantine and a rule toggle round-trip through the confirmation dialog; requests without the
session (or without its CSRF token, or with a used ticket) are refused. A screenshot of each
page goes to docs/images/dashboard-<page>.png for review."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roxd.api.client import ApiClient
from tests.attack_script import ATTACK, climb_the_phases
from tests.conftest import REPO, RoxdProcess, start_roxd, wait_until
from tests.system.conftest import free_port

pytestmark = pytest.mark.system

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
IMAGES = REPO / "docs/images"
PHASES = ["foothold", "privilege_escalation", "persistence", "lateral_movement", "objectives"]
# connects to changing ports (identical ones would be folded in the kernel for 10 s)
TALKER = ("i=0; while true; do i=$((i+1)); /bin/nc -w 1 127.0.0.1 $((20000 + i % 7)) "
          "</dev/null; sleep 0.3; done")


def http_call(port: int, method: str, path: str, *, cookie: str | None = None,
              headers: dict[str, str] | None = None,
              body: Any = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        h = dict(headers or {})
        if cookie:
            h["Cookie"] = f"roxd_session={cookie}"
        payload = None if body is None else json.dumps(body)
        if payload:
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=h)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def roxctl_ui(sock: str, **kwargs: Any) -> str:
    done = subprocess.run([sys.executable, "-m", "roxd.ctl", "--socket", sock, "ui"],
                          capture_output=True, text=True, timeout=60, cwd="/", **kwargs)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def login_cookie(port: int, url: str) -> str:
    status, headers, _ = http_call(port, "GET", url.split(str(port), 1)[1])
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium and chromium-driver are missing: run scripts/setup.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="roxd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    # no outside network here: nothing that phones home, and a fresh profile
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--window-size=1400,1000", "--lang=en-US"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, CSP
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Pages:
    """The dashboard as a user drives it: open a page, wait until it rendered, look."""

    def __init__(self, driver: Any, base: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.base, self.By, self.Wait = driver, base, By, WebDriverWait

    def open(self, route: str) -> Any:
        page = route.split("/")[0].split("?")[0]
        self.d.execute_script("document.getElementById('page').dataset.ready = 'no';"
                              "location.hash = arguments[0];", "#/" + route)
        self.ready(page)
        return self.d.find_element(self.By.ID, "page")

    def ready(self, page: str) -> None:
        def done(d: Any) -> bool:
            main = d.find_element(self.By.ID, "page")
            return bool(main.get_attribute("data-page") == page
                        and main.get_attribute("data-ready") == "yes")

        self.Wait(self.d, 20).until(done)
        errors = self.d.find_elements(self.By.CSS_SELECTOR, "#page .error")
        assert not errors, errors[0].text

    def find(self, css: str, timeout: float = 15) -> Any:
        from selenium.common.exceptions import TimeoutException

        try:
            return self.Wait(self.d, timeout).until(
                lambda d: (d.find_elements(self.By.CSS_SELECTOR, css) or [None])[0])
        except TimeoutException:
            raise AssertionError(f"no {css} within {timeout}s on {self.d.current_url}; "
                                 f"the page shows:\n{self.text()[:3000]}") from None

    def text(self) -> str:
        return str(self.d.find_element(self.By.ID, "page").text)

    def click(self, element: Any) -> None:
        """Click as a user would, with the element in mid-screen (not under the sticky
        header or a toast)."""
        self.d.execute_script("document.getElementById('toasts').replaceChildren();"
                              "arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def confirm(self, button: Any, accept: bool = True) -> None:
        self.click(button)
        dialog = self.find("dialog#confirm[open]", 5)
        assert dialog.find_element(self.By.ID, "confirm-title").text  # says what will happen
        self.d.find_element(self.By.ID, "confirm-ok" if accept else "confirm-cancel").click()
        self.Wait(self.d, 5).until(lambda d: not d.find_elements(self.By.CSS_SELECTOR,
                                                                 "dialog#confirm[open]"))

    def shot(self, name: str) -> None:
        self.d.execute_script("document.getElementById('toasts').replaceChildren()")
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(1400, max(900, min(int(height) + 20, 1800)))
        IMAGES.mkdir(parents=True, exist_ok=True)
        assert self.d.save_screenshot(str(IMAGES / f"dashboard-{name}.png"))
        self.d.set_window_size(1400, 1000)


def test_dashboard_pages_actions_and_auth(docker_engine: Any, run_container: Any,
                                          browser: Any) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="roxd-dashboard-"))
    workdir.chmod(0o755)  # the read-only user below must reach the socket
    sock = str(workdir / "roxd.sock")
    port = free_port()
    marker = uuid.uuid4().hex[:6]
    victim_name, talker_name = f"roxd-dash-web-{marker}", f"roxd-dash-talk-{marker}"
    config = ("[daemon]\nstats_interval_s = 5.0\n[incidents]\nquiet_window_s = 600.0\n"
              f"[dashboard]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n")
    rp: RoxdProcess | None = None
    try:
        rp = start_roxd(workdir, config=config)
        rp.wait_ready()
        assert f"dashboard listening on http://127.0.0.1:{port}/" in rp.stderr()
        token = workdir / "state/dashboard/token"
        assert token.stat().st_mode & 0o777 == 0o600

        victim = run_container("sleep 600", name=victim_name)
        run_container(TALKER, name=talker_name)
        climb_the_phases(rp, victim, victim_name, marker)  # a dropped binary's shell

        def five_phases() -> Any:
            with ApiClient(sock) as c:
                items = c.get("/v1/incidents", {"container": victim.id})["items"]
            return items[0] if items and len(items[0]["phases"]) == 5 else None

        incident = wait_until(five_phases, 15, message="the incident with all five phases")

        # ---- without the session: refused
        for method, path in (("GET", "/"), ("GET", "/api/v1/status"),
                             ("GET", "/api/v1/alerts/stream?format=sse"),
                             ("POST", f"/api/v1/containers/{victim_name}/isolate")):
            status, _h, body = http_call(port, method, path)
            assert status == 401, (method, path, body)
        status, _h, _b = http_call(port, "GET", "/api/v1/status", cookie="session.admin.1.x.y")
        assert status == 401  # a forged cookie is no session
        status, _h, _b = http_call(port, "GET", "/api/v1/health",
                                   headers={"Host": f"rebound.example:{port}"})
        assert status == 400  # DNS rebinding: not our Host
        url = roxctl_ui(sock)
        cookie = login_cookie(port, url)
        status, _h, _b = http_call(port, "GET", url.split(str(port), 1)[1])
        assert status == 401  # a ticket works once
        status, _h, body = http_call(port, "POST", f"/api/v1/containers/{victim_name}/isolate",
                                     cookie=cookie, body={"reason": "no csrf"})
        assert status == 403 and b"X-Roxd-Csrf" in body  # a change needs the CSRF token
        with ApiClient(sock) as c:
            assert c.get(f"/v1/containers/{victim_name}")["mode"] == "enforce"

        # ---- the browser: log in with a fresh link; the ticket leaves the address bar
        pages = Pages(browser, f"http://127.0.0.1:{port}")
        browser.get(roxctl_ui(sock))
        pages.ready("overview")
        assert browser.current_url == f"http://127.0.0.1:{port}/"
        [session] = [c for c in browser.get_cookies() if c["name"] == "roxd_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert browser.find_element(pages.By.ID, "role").text == "admin"

        # overview: the attacked container ranks by risk; the chart has its alerts
        main = pages.open("overview")
        row = pages.find(f'tr[data-container="{victim_name}"]')
        assert int(row.find_elements(pages.By.TAG_NAME, "td")[1].text.split()[-1]) >= 25
        assert main.find_elements(pages.By.CSS_SELECTOR, "#phase-chart rect")
        assert pages.find("#stat-health .stat-value").text == "ok"
        pages.shot("overview")

        # incidents: the kill chain reaches all five phases; the process tree has the shell
        main = pages.open(f"incidents/{incident['id']}")
        reached = main.find_elements(pages.By.CSS_SELECTOR, "ol.chain li.reached")
        assert len(reached) == 5
        dots = {d.get_attribute("data-rule")
                for d in main.find_elements(pages.By.CSS_SELECTOR, "svg.killchain circle")}
        assert {rule for rule, _ in ATTACK} <= dots
        tree = pages.find("ul.tree").text
        assert "/bin/cat" in tree and "privilege_escalation.read-shadow" in tree
        pages.shot("incidents")

        # alerts: filtered to the container; a row opens the detail with its ancestry
        pages.open(f"alerts?container={victim_name}")
        row = pages.find('#alert-list tr[data-rule="privilege_escalation.read-shadow"]')
        assert victim_name in row.text and "/etc/shadow" in row.text
        # live: a new alert arrives over the API's event stream without a reload (another
        # argv, so noise control does not fold it into the first). Its argv holds an ESC
        # sequence and a right-to-left override: shown as \xNN, as roxctl shows them
        victim.exec_run(["/bin/cat", "/etc/shadow", "/x\x1b[2J\u202eexe.txt"])
        shown = "/x\\x1b[2J\\xe2\\x80\\xaeexe.txt"
        pages.Wait(browser, 20).until(
            lambda _d: shown in pages.find("#alert-list tbody tr").text)  # newest first
        pages.shot("alerts")
        pages.click(row)
        pages.ready("alerts")
        assert pages.find("#alert-rule").text == "privilege_escalation.read-shadow"
        ancestry = pages.find("ol.ancestry").find_elements(pages.By.TAG_NAME, "li")
        assert len(ancestry) >= 2 and "/etc/shadow" in ancestry[-1].text
        assert pages.find('button[data-action="isolate"]').is_enabled()  # admin
        pages.shot("alert-detail")

        # containers: quarantine (cancel first: nothing happens), then release
        pages.open("containers")
        row = pages.find(f'tr[data-container="{victim_name}"]')
        assert "learning" in row.text or "locked" in row.text  # its process baseline
        pages.confirm(row.find_element(pages.By.CSS_SELECTOR, 'button[data-action="isolate"]'),
                      accept=False)
        with ApiClient(sock) as c:
            assert c.get(f"/v1/containers/{victim_name}")["mode"] == "enforce"
        pages.confirm(pages.find(f'tr[data-container="{victim_name}"] '
                                 'button[data-action="isolate"]'))
        pages.find(f'tr[data-container="{victim_name}"][data-mode="quarantined"]', 30)
        with ApiClient(sock) as c:
            assert c.get(f"/v1/containers/{victim_name}")["mode"] == "quarantined"
        pages.shot("containers")
        pages.confirm(pages.find(f'tr[data-container="{victim_name}"] '
                                 'button[data-action="release"]'))
        pages.find(f'tr[data-container="{victim_name}"][data-mode="enforce"]', 30)
        with ApiClient(sock) as c:
            assert c.get(f"/v1/containers/{victim_name}")["mode"] == "enforce"
        # its page: facts from the engine's inventory, every reason of its risk score
        pages.open(f"containers/{victim_name}")
        detail = pages.find(f'#container-detail[data-container="{victim_name}"]')
        assert "sleep 600" in detail.text and "root_user" in detail.text
        pages.shot("container-detail")

        # network: the attack's connect from the alert history, the talker's live
        pages.open("network")
        pages.find(f'tr[data-src="{victim_name}"]')
        pages.find(f'tr[data-src="{talker_name}"]', 20)
        pages.shot("network")

        # posture: the CIS results of the real engine
        main = pages.open("posture")
        results = {r.get_attribute("data-result")
                   for r in main.find_elements(pages.By.CSS_SELECTOR, "tr[data-check]")}
        assert results and results <= {"PASS", "WARN", "INFO", "NOTE"}
        assert "Container Runtime" in pages.text()
        main = pages.open("posture?result=WARN")  # what needs fixing, for the screenshot
        assert {r.get_attribute("data-result") for r in main.find_elements(
            pages.By.CSS_SELECTOR, "tr[data-check]")} <= {"WARN"}
        pages.shot("posture")

        # rules: disable (confirmed), then enable again
        rule = "foothold.exec-from-tmp"
        pages.open("rules?phase=foothold")
        row = pages.find(f'tr[data-rule="{rule}"]')
        assert "alert" in row.text  # its effective action on this host
        pages.confirm(row.find_element(pages.By.CSS_SELECTOR,
                                       'button[data-action="disable-rule"]'))
        pages.find(f'tr[data-rule="{rule}"][data-enabled="false"]')
        with ApiClient(sock) as c:
            assert c.get(f"/v1/rules/{rule}")["enabled"] is False
        pages.shot("rules")
        pages.click(pages.find(f'tr[data-rule="{rule}"] button[data-action="enable-rule"]'))
        pages.find(f'tr[data-rule="{rule}"][data-enabled="true"]')
        with ApiClient(sock) as c:
            assert c.get(f"/v1/rules/{rule}")["enabled"] is True

        # no script error, no failed request on any page (CSP violations would show here too)
        severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe

        # a member of the socket's group gets a read-only session: it sees, it cannot act
        gid = os.stat(sock).st_gid
        read_url = roxctl_ui(sock, user=65534, group=65534, extra_groups=[gid])
        read_cookie = login_cookie(port, read_url)
        status, _h, body = http_call(port, "GET", "/session", cookie=read_cookie)
        csrf = json.loads(body)["csrf"]
        assert json.loads(body)["role"] == "read"
        status, _h, body = http_call(port, "POST", "/api/v1/rules/disable", cookie=read_cookie,
                                     headers={"X-Roxd-Csrf": csrf}, body={"ids": [rule]})
        assert status == 403 and b"admin session" in body
        browser.delete_all_cookies()
        browser.get(roxctl_ui(sock, user=65534, group=65534, extra_groups=[gid]))
        pages.ready("overview")
        assert browser.find_element(pages.By.ID, "role").text == "read-only"
        pages.open("containers")
        button = pages.find(f'tr[data-container="{victim_name}"] button[data-action="isolate"]')
        assert not button.is_enabled()
    finally:
        if rp is not None:
            rp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
