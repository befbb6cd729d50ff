"""The web console in a real browser: Debian's chromium driven by Playwright for Python.

Run by tests/console.rs, which owns the gateway, the simulated device and the broker:

    console_browser.py BASE_URL USER PASSWORD [SCREENSHOT_DIR]

When the page needs something done to the world (a value changed on the device, the broker
stopped), the script prints `ask ACTION` and waits for `done [ARG]` on stdin. It prints
`report {json}` lines with what it measured, and exits non-zero (an assertion) when the page
does not show what it must. Every wait is for a DOM state, each with a bound; the bound on a
changed value is the console's promise (2 s), the others only keep a broken build from hanging.
"""

import json
import sys
import time

from playwright.sync_api import sync_playwright

BASE, USER, PASSWORD = sys.argv[1:4]
SHOTS = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
# Playwright gives every launch a fresh, empty profile (its own --user-data-dir). Waits are
# written as functions: the console's Content-Security-Policy forbids evaluating strings.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VALUE_BOUND_MS = 2000
SLOW_BOUND_MS = 30000


def ask(action):
    print("ask " + action, flush=True)
    line = sys.stdin.readline().strip()
    assert line.startswith("done"), f"{action}: the test answered {line!r}"
    return line[len("done"):].strip()


def report(**values):
    print("report " + json.dumps(values), flush=True)


def text(page, selector):
    return (page.text_content(selector) or "").strip()


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/console-{name}.png")


def open_live(page, path):
    response = page.goto(BASE + path)
    assert response is not None and response.status == 200, f"{path}: {response and response.status}"
    # The event stream is open: later changes arrive without a reload.
    page.wait_for_selector("#live.on", timeout=SLOW_BOUND_MS)
    return response


def main():
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1100, "height": 640},
        )
        page = context.new_page()
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        # Overview: the link is up, the queue's figures are there.
        open_live(page, "/")
        page.wait_for_function(
            "() => document.getElementById('uplink-state')?.textContent === 'connected'", timeout=SLOW_BOUND_MS
        )
        assert text(page, "#queue-depth").isdigit(), text(page, "#queue-depth")
        page.wait_for_function(
            "() => document.getElementById('devices-online')?.textContent === '2 of 2'", timeout=SLOW_BOUND_MS
        )
        # Rows the broker refused for good (the test left 3 in the queue file): held per reason,
        # with what to do.
        assert text(page, "#rejected-rows") == "3 rows", text(page, "#rejected-rows")
        assert text(page, '#rejected dd[data-reason="not_authorized"]') == "3"
        hint = text(page, "#rejected")
        for step in ("fieldrelay queue export --rejected", "fieldrelay queue requeue-rejected", "ACL"):
            assert step in hint, hint
        shot(page, "overview")

        # Devices: every point listed; a value changed on the device shows without a reload.
        started = time.monotonic()
        open_live(page, "/devices")
        timing = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {load: n.loadEventEnd - n.startTime, dom: n.domContentLoadedEventEnd - n.startTime}; })()"
        )
        rows = page.locator("tr[data-d]").count()
        report(devices_page_rows=rows, devices_page_load_ms=round(timing["load"]),
               devices_page_dom_ms=round(timing["dom"]), devices_page_live_ms=round((time.monotonic() - started) * 1000))
        cell = 'tr[data-d="boiler"][data-p="counter"] td.v'
        expected = ask("change-value")
        changed_at = time.monotonic()
        page.wait_for_function(
            "([sel, want]) => document.querySelector(sel)?.textContent === want",
            arg=[cell, expected],
            timeout=VALUE_BOUND_MS,
        )
        report(value_shown_ms=round((time.monotonic() - changed_at) * 1000))
        assert page.locator('tr[data-d="boiler"][data-p="level"] .spark polyline').count() == 1, "no sparkline"
        shot(page, "devices")

        # Commands: the result of a command sent through the broker.
        command = ask("send-command")
        open_live(page, "/commands")
        page.wait_for_function(
            "id => [...document.querySelectorAll('#commands-rows tr')].some(r => r.textContent.includes(id) && r.textContent.includes('ok'))",
            arg=command,
            timeout=SLOW_BOUND_MS,
        )
        shot(page, "commands")

        # The broker stops: the overview shows the link retrying, with its error, and the queue growing.
        open_live(page, "/")
        ask("stop-broker")
        page.wait_for_function(
            "() => document.getElementById('uplink-state')?.textContent === 'retrying'", timeout=SLOW_BOUND_MS
        )
        assert text(page, "#uplink-error"), "no last error shown"
        # The failed attempts, numbered as the reconnect log lines number them.
        page.wait_for_function(
            "() => Number(document.getElementById('uplink-attempts')?.textContent) >= 1", timeout=SLOW_BOUND_MS
        )
        before = int(text(page, "#queue-depth"))
        page.wait_for_function(
            "n => Number(document.getElementById('queue-depth')?.textContent) > n",
            arg=before,
            timeout=SLOW_BOUND_MS,
        )
        report(queue_grew_from=before, queue_now=int(text(page, "#queue-depth")))
        shot(page, "overview-retrying")

        # The device dies: it is shown offline, with its error.
        open_live(page, "/devices")
        ask("kill-device")
        page.wait_for_selector(
            'section.device[data-name="boiler"] .pill[data-state="offline"]', timeout=SLOW_BOUND_MS
        )
        assert "last error" in text(page, 'section.device[data-name="boiler"] .health')

        # The log page shows what happened.
        open_live(page, "/log")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#log-lines li')].some(li => li.textContent.includes('device status: offline'))",
            timeout=SLOW_BOUND_MS,
        )

        # Wrong or no credentials: refused. Headless Chromium cannot ask a person, so it gives up
        # on a 401 it cannot answer with net::ERR_INVALID_AUTH_CREDENTIALS.
        for credentials in (
            {"username": USER, "password": PASSWORD + "x"},
            {"username": "nobody", "password": PASSWORD},
            None,
        ):
            other = browser.new_context(http_credentials=credentials)
            try:
                response = other.new_page().goto(BASE + "/devices")
                refused = response is not None and response.status == 401
            except Exception as error:  # noqa: BLE001 - Playwright's Error, whose text says why
                refused = "ERR_INVALID_AUTH_CREDENTIALS" in str(error)
            assert refused, f"{credentials}: not refused"
            if credentials is None:
                # What the browser was told (through Playwright's own client, which shows a 401).
                answer = other.request.get(BASE + "/devices")
                assert answer.status == 401, answer.status
                assert answer.headers.get("www-authenticate", "").startswith("Basic realm="), answer.headers
            other.close()

        browser.close()
    assert not problems, "the page reported problems:\n" + "\n".join(problems)
    print("browser checks passed", flush=True)


if __name__ == "__main__":
    main()
