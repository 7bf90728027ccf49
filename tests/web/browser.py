#!/usr/bin/python3
"""Drive the daemon's web page in headless Chromium and check it end to end.

Usage:
  python3 tests/web/browser.py --url http://127.0.0.1:PORT/ [--auth USER:PASS]
      --magnet LINK --magnet-hash HEX --torrent FILE --torrent-hash HEX
      [--xss-hash HEX] --screenshots DIR [--timeout 120]

Adds the magnet link through #magnet/#add-magnet and the .torrent through #torrent-file,
waits for both rows to reach data-percent=100, checks that a torrent named
`<img src=x onerror=alert(1)>` renders as text, pauses and resumes the .torrent one,
opens its details, removes the magnet one (keeping data) and saves desktop.png and
phone.png. Prints `STEP <name> ok` per step; on the first failure prints `FAIL ...`,
saves fail.png and exits 1.

Run it only inside a network namespace with nothing but loopback (scripts/netns-run):
the browser must never reach the internet. Needs python3-selenium, chromium and
chromium-driver (Debian packages; the Debian selenium lives in /usr/bin/python3).
"""
import argparse
import base64
import json
import os
import sys
import time

XSS_NAME = "<img src=x onerror=alert(1)>"

# Installed before any page script runs: records dialogs instead of blocking on them,
# so an injected alert() is detected rather than hanging the run.
HOOK = """
window.__alerted = [];
for (const k of ['alert', 'confirm', 'prompt']) {
  window[k] = function (m) { window.__alerted.push(k + ':' + String(m)); return k === 'confirm' ? false : null; };
}
"""

# Reads one row's contract attributes in a single round trip (no stale element races).
ROW_JS = """
const r = document.querySelector('#list .torrent[data-hash="' + arguments[0] + '"]');
if (!r) return null;
const q = s => r.querySelector(s);
return {name: q('.name').textContent, percent: q('.progress').getAttribute('data-percent'),
        state: q('.state').textContent.trim()};
"""


class Fail(Exception):
    pass


def step(name):
    print(f"STEP {name} ok", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--auth", help="USER:PASS for HTTP basic auth")
    ap.add_argument("--magnet", required=True)
    ap.add_argument("--magnet-hash", required=True)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--torrent-hash", required=True)
    ap.add_argument("--xss-hash", help="hash of a torrent named " + XSS_NAME)
    ap.add_argument("--screenshots", required=True)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for both downloads")
    args = ap.parse_args()
    args.magnet_hash = args.magnet_hash.lower()
    args.torrent_hash = args.torrent_hash.lower()
    args.xss_hash = args.xss_hash.lower() if args.xss_hash else None
    os.makedirs(args.screenshots, exist_ok=True)

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        print(f"FAIL selenium is not importable ({e}); apt-get install python3-selenium", flush=True)
        return 1

    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800", "--no-first-run", "--disable-extensions", "--disable-sync",
              "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
              "--lang=en-US"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    except Exception as e:  # noqa: BLE001 - any start-up error is a failed run
        print(f"FAIL could not start chromium/chromedriver: {e}", flush=True)
        return 1
    try:
        run(driver, args)
        print("PASS", flush=True)
        return 0
    except Fail as e:
        print(f"FAIL {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - report, screenshot, exit 1
        print(f"FAIL unexpected {type(e).__name__}: {e}", flush=True)
    try:
        driver.save_screenshot(os.path.join(args.screenshots, "fail.png"))
        print(f"  screenshot: {os.path.join(args.screenshots, 'fail.png')}", flush=True)
        dump_page(driver)
    except Exception:  # noqa: BLE001 - best effort diagnostics
        pass
    return 1


def dump_page(driver):
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#list .torrent')].map(r => r.dataset.hash + ' '"
        " + r.querySelector('.progress').dataset.percent + '% ' + r.querySelector('.state').textContent)")
    print(f"  rows: {json.dumps(rows)}", flush=True)
    status = driver.execute_script("return document.querySelector('#status').textContent")
    print(f"  status: {status}", flush=True)
    toast = driver.execute_script("const t = document.querySelector('#toast'); return t.hidden ? '' : t.textContent")
    if toast:
        print(f"  toast: {toast}", flush=True)
    for entry in driver.get_log("browser")[-20:]:
        print(f"  console {entry.get('level')}: {entry.get('message')}", flush=True)


def wait_for(what, fn, timeout):
    """Polls fn until it returns something truthy; transient WebDriver errors count as not yet."""
    from selenium.common.exceptions import WebDriverException
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
            last = v
        except WebDriverException as e:
            last = f"{type(e).__name__}: {e.msg}"
        if time.monotonic() >= deadline:
            raise Fail(f"timed out after {timeout:.0f}s waiting for {what} (last seen: {last!r})")
        time.sleep(0.2)


def run(driver, a):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    def row(h):
        return driver.execute_script(ROW_JS, h)

    def click(css, what):
        el = wait_for(f"{what} to be clickable",
                      lambda: next((e for e in driver.find_elements(By.CSS_SELECTOR, css)
                                    if e.is_displayed() and e.is_enabled()), None), 15)
        el.click()

    def wait_state(h, want, timeout):
        try:
            wait_for(f"{h} .state to read {want!r}", lambda: (row(h) or {}).get("state") == want, timeout)
        except Fail as e:
            raise Fail(f"{e}; row is {row(h)}") from None

    def no_alerts(where):
        fired = driver.execute_script("return window.__alerted || []")
        if fired:
            raise Fail(f"{where}: page called {fired}")
        try:
            text = driver.switch_to.alert.text
            raise Fail(f"{where}: an alert is open: {text!r}")
        except NoAlertPresentException:
            pass

    shots = a.screenshots
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
    if a.auth:
        token = base64.b64encode(a.auth.encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    driver.set_window_size(1280, 800)
    driver.set_page_load_timeout(30)

    driver.get(a.url)
    try:
        wait_for("the page to connect to the RPC (#conn.ok)",
                 lambda: driver.execute_script("const c = document.querySelector('#conn'); return c && c.classList.contains('ok')"), 30)
    except Fail as e:
        # A 401 without usable credentials leaves Chromium waiting on its own login prompt.
        raise Fail(f"{e}; if the daemon wants a password, is --auth right?") from None
    step("load")

    driver.find_element(By.CSS_SELECTOR, "#magnet").send_keys(a.magnet)
    driver.find_element(By.CSS_SELECTOR, "#add-magnet").click()
    wait_for(f"the magnet row {a.magnet_hash}", lambda: row(a.magnet_hash), 30)
    if driver.find_element(By.CSS_SELECTOR, "#magnet").get_attribute("value"):
        raise Fail("#magnet was not cleared after a successful add")
    step("add-magnet")

    driver.find_element(By.CSS_SELECTOR, "#torrent-file").send_keys(os.path.abspath(a.torrent))
    wait_for(f"the .torrent row {a.torrent_hash}", lambda: row(a.torrent_hash), 30)
    step("add-torrent")

    try:
        wait_for("both torrents to reach data-percent=100",
                 lambda: all((row(h) or {}).get("percent") == "100" for h in (a.magnet_hash, a.torrent_hash)),
                 a.timeout)
    except Fail as e:
        raise Fail(f"{e}; magnet row {row(a.magnet_hash)}, torrent row {row(a.torrent_hash)}") from None
    step("complete")

    if a.xss_hash:
        r = row(a.xss_hash)
        if not r:
            raise Fail(f"no row for --xss-hash {a.xss_hash}")
        if r["name"] != XSS_NAME:
            raise Fail(f".name of {a.xss_hash} is {r['name']!r}, expected the literal {XSS_NAME!r}")
        imgs = driver.execute_script("return document.querySelectorAll('img').length")
        if imgs:
            raise Fail(f"{imgs} <img> element(s) in the page: a torrent name was parsed as HTML")
        no_alerts("xss")
        step("xss")

    h = a.torrent_hash
    click(f'#list .torrent[data-hash="{h}"] [data-action="pause"]', "pause")
    wait_state(h, "Paused", 30)
    step("pause")
    click(f'#list .torrent[data-hash="{h}"] [data-action="resume"]', "resume")
    wait_state(h, "Seeding", 60)
    step("resume")

    click(f'#list .torrent[data-hash="{h}"] [data-action="details"]', "details")
    wait_for("#details to list files with input.wanted",
             lambda: driver.execute_script(
                 "const d = document.querySelector('#details');"
                 "return !d.hidden && d.querySelectorAll('#d-files input.wanted[data-index]').length > 0"), 15)
    checked = driver.execute_script("return [...document.querySelectorAll('#d-files input.wanted')].every(c => c.checked)")
    if not checked:
        raise Fail("a file of the completed torrent is shown as not wanted")
    if driver.execute_script("return document.querySelectorAll('img').length"):
        raise Fail("<img> element in the page after opening details")
    time.sleep(2.5)  # let one poll fill peers and trackers before the picture
    driver.save_screenshot(os.path.join(shots, "details.png"))
    click('#details [data-action="close-details"]', "close details")
    wait_for("#details to close", lambda: driver.execute_script("return document.querySelector('#details').hidden"), 10)
    step("details")

    driver.save_screenshot(os.path.join(shots, "desktop.png"))
    step("desktop-screenshot")

    m = a.magnet_hash
    click(f'#list .torrent[data-hash="{m}"] [data-action="remove"]', "remove")
    wait_for("the remove dialog to open", lambda: driver.execute_script("return document.querySelector('#remove-dialog').open"), 10)
    driver.save_screenshot(os.path.join(shots, "remove-dialog.png"))
    click('#remove-dialog [data-action="remove-keep"]', "remove-keep")
    wait_for(f"the magnet row {m} to disappear", lambda: row(m) is None, 30)
    time.sleep(2.5)  # a later poll must not bring it back
    if row(m) is not None:
        raise Fail(f"row {m} came back after removal")
    step("remove")

    driver.set_window_size(390, 844)
    width = driver.execute_script("return window.innerWidth")
    if width != 390:  # window size includes browser chrome on some builds: pin the viewport
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    time.sleep(0.5)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        raise Fail(f"phone layout overflows horizontally by {overflow}px")
    driver.save_screenshot(os.path.join(shots, "phone.png"))
    step("phone-screenshot")

    no_alerts("end")
    # Uncaught exceptions and Content-Security-Policy refusals both mean part of the page broke.
    errors = [e["message"] for e in driver.get_log("browser")
              if e.get("level") == "SEVERE" and any(k in e.get("message", "") for k in ("Uncaught", "Refused to"))]
    if errors:
        raise Fail(f"script errors: {errors}")
    step("no-script-errors")


if __name__ == "__main__":
    sys.exit(main())
