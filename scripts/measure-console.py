"""Browser side of scripts/measure-console.sh (Debian's chromium through Playwright).

    measure-console.py render BASE_URL LOADS     # devices page load times, one fresh page each
    measure-console.py hold BASE_URL SECONDS N   # N live consoles open for SECONDS

`render` prints one JSON line: rows and the median and worst navigation-to-load time (the
page is server-rendered; its script runs before the load event, sparklines included) and the
time until the live stream is open. `hold` prints `open` once every page is live, then keeps
them open (one browser, N contexts: N separate consoles).
"""

import json
import statistics
import sys
import time

from playwright.sync_api import sync_playwright

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def main():
    mode, base = sys.argv[1], sys.argv[2]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        if mode == "render":
            loads, lives, rows = [], [], 0
            for _ in range(int(sys.argv[3])):
                page = browser.new_context().new_page()
                started = time.monotonic()
                page.goto(base + "/devices")
                loads.append(page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; }"
                ))
                page.wait_for_selector("#live.on", timeout=30000)
                lives.append((time.monotonic() - started) * 1000)
                rows = page.locator("tr[data-d]").count()
                page.context.close()
            print(json.dumps({
                "rows": rows,
                "load_ms_median": round(statistics.median(loads)),
                "load_ms_max": round(max(loads)),
                "live_ms_median": round(statistics.median(lives)),
            }), flush=True)
        else:
            seconds, count = float(sys.argv[3]), int(sys.argv[4])
            pages = []
            for i in range(count):
                page = browser.new_context().new_page()
                page.goto(base + ["/devices", "/", "/log"][i % 3])
                page.wait_for_selector("#live.on", timeout=30000)
                pages.append(page)
            print("open", flush=True)
            time.sleep(seconds)
            for page in pages:
                assert page.text_content("#live") == "live", "a console lost its stream"
        browser.close()


if __name__ == "__main__":
    main()
