#!/usr/bin/env python3
"""The web console in a real browser (Debian's chromium, headless, driven by selenium).

A coordinator with --console-listen on loopback runs a 3-round job with 3 fedge-client
devices. The test checks, in the page's DOM:
- as a viewer: the job's rounds and their accuracy equal `fedgectl rounds`, the device rows
  equal `fedgectl clients`; no stop button, and the API refuses the viewer's stop (403);
- the console stays live: each round's row appears within 2 s of the round closing
  (closed_unix_ms), without a reload;
- as an operator: the stop button stops a running job;
- the page loaded nothing from anywhere but the coordinator;
and saves screenshots under WORK_DIR (CI artefacts).

usage: console_browser_test.py BIN_DIR WORK_DIR PYTHON
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import fedge
from fedge.v1 import job_pb2
from harness import Fleet, check, wait_for, write_secret
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

JOB = """
name: "console-test"
architecture: "mlp"
strategy {{ fed_avg {{}} }}
rounds: {rounds}
selection {{ clients_per_round: 3 seed: 0 }}
round_policy {{ quorum: 3 deadline_seconds: 120 }}
local_training {{ epochs: 100 batch_size: 256 learning_rate: 0.05 momentum: 0.9 max_steps: {steps} }}
evaluation {{ dataset: "fashion-mnist" }}
"""


# The rows matching a selector as [data attribute, text of a cell] pairs, read in one script
# (the page replaces rows as events arrive: element handles would go stale).
ROWS = """
const [selector, key, cell] = arguments;
return [...document.querySelectorAll(selector)].map(r =>
    [r.dataset[key], cell ? (r.querySelector(cell)?.textContent ?? null) : null]);
"""


def browser(work: str) -> webdriver.Chrome:
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", f"--user-data-dir={work}/chromium-profile",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver",
                                            log_output=os.path.join(work, "chromedriver.log")),
                            options=o)


def sign_in(d: webdriver.Chrome, url: str, token: str) -> None:
    d.get(url + "/#/jobs")
    if d.find_elements(By.ID, "logout") and d.find_element(By.ID, "logout").is_displayed():
        d.find_element(By.ID, "logout").click()
    wait_for("the login form", lambda: d.find_element(By.ID, "token").is_displayed())
    box = d.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token)
    d.find_element(By.ID, "login").click()
    wait_for("the signed-in bar", lambda: d.find_element(By.ID, "whoami").text)


def fedgectl(bin_dir: str, admin_addr: str, token_file: str, *args: str) -> str:
    return subprocess.run([os.path.join(bin_dir, "fedgectl"), "--coordinator", admin_addr,
                           "--insecure", "--token-file", token_file, *args],
                          check=True, capture_output=True, text=True).stdout


def main() -> int:
    bin_dir, work, _python = sys.argv[1], sys.argv[2], sys.argv[3]
    driver = None
    fleet = Fleet(bin_dir, work, roles=("operator", "viewer"), console=True)
    try:
        url, admin_addr, tokens = fleet.console_url, fleet.admin_addr, fleet.tokens
        op_token_file = write_secret(os.path.join(work, "operator-token"), tokens["operator"])
        shards = fleet.partition(clients=3, train_examples=3000)
        for i in range(3):
            fleet.start_client(i, shards)
        admin = fleet.admin("operator")
        fleet.wait_registered(admin, 3)

        driver = browser(work)
        sign_in(driver, url, tokens["viewer"])
        check(driver.find_element(By.ID, "whoami").text.endswith("(viewer)"),
              f"signed in as a viewer ({driver.find_element(By.ID, 'whoami').text})")

        # A 3-round job (rounds of about a second: 200 steps of batch 256), opened in the page
        # before its first round closes.
        job = admin.start_job(JOB.format(rounds=3, steps=200)).job_id
        driver.get(f"{url}/#/jobs/{job}")
        wait_for("the live event stream", lambda: driver.find_element(By.ID, "live").text == "live")
        seen: dict[int, float] = {}  # round → when its completed row appeared (Unix s)
        closed: dict[int, float] = {}
        watcher_error: list[BaseException] = []

        def watch() -> None:
            try:
                for e in admin.watch(job, timeout_s=300):
                    if e.WhichOneof("kind") == "round_closed":
                        closed[e.round_closed.round] = e.round_closed.closed_unix_ms / 1000.0
            except BaseException as ex:  # noqa: BLE001 — reported below
                watcher_error.append(ex)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        end = time.time() + 300
        while len(seen) < 3 and time.time() < end:
            for r in driver.execute_script(ROWS, "#rounds tbody tr[data-state='completed']",
                                           "round", None):
                seen.setdefault(int(r[0]), time.time())
            time.sleep(0.05)
        t.join(timeout=30)
        check(not watcher_error, f"fedge.Admin watched the job ({watcher_error})")
        check(sorted(seen) == [1, 2, 3], f"rounds {sorted(seen)} appeared in the page live")
        lags = {r: seen[r] - closed[r] for r in seen}
        check(all(lag < 2.0 for lag in lags.values()),
              "each round appeared within 2 s of closing, without a reload ("
              + ", ".join(f"round {r}: {lag:.2f} s" for r, lag in sorted(lags.items())) + ")")
        driver.save_screenshot(os.path.join(work, "console-job.png"))

        # The page's rounds against `fedgectl rounds`.
        ctl = fedgectl(bin_dir, admin_addr, op_token_file, "rounds", job)
        expected = {int(m.group(1)): m.group(2)
                    for m in re.finditer(r"^round +(\d+) +completed .*? acc ([0-9.]+)", ctl, re.M)}
        page = {int(r): acc for r, acc in driver.execute_script(
            ROWS, "#rounds tbody tr[data-state='completed']", "round", "td.acc")}
        check(expected and page == expected,
              f"the page's rounds and accuracy equal fedgectl rounds ({page})")

        # The devices page against `fedgectl clients`.
        driver.get(f"{url}/#/devices")
        ctl = fedgectl(bin_dir, admin_addr, op_token_file, "clients")
        expected_ids = sorted(m.group(1) for m in re.finditer(r"^(c-[0-9a-f]+) +active", ctl, re.M))
        rows = wait_for("3 device rows", lambda: (lambda r: r if len(r) >= 3 else None)(
            driver.execute_script(ROWS, "#devices tbody tr[data-client-id]", "clientId",
                                  "td.rounds")))
        page_ids = sorted(r[0] for r in rows)
        check(len(expected_ids) == 3 and page_ids == expected_ids,
              f"the device rows equal fedgectl clients ({page_ids})")
        rounds_cells = dict(rows)
        ctl_rounds = {m.group(1): m.group(2) for m in
                      re.finditer(r"^(c-[0-9a-f]+) +active +\S+ +\d+ +(\d+) ", ctl, re.M)}
        check(rounds_cells == ctl_rounds, f"and their round counts too ({rounds_cells})")
        driver.save_screenshot(os.path.join(work, "console-devices.png"))

        # A viewer cannot stop a running job: no button, and the API refuses.
        job2 = admin.start_job(JOB.format(rounds=50, steps=200)).job_id
        driver.get(f"{url}/#/jobs")
        wait_for("the running job's row", lambda: driver.find_element(
            By.CSS_SELECTOR, f"#jobs tr[data-job-id='{job2}'] td.state").text == "running")
        check(not driver.find_elements(By.CSS_SELECTOR, "button.stop"),
              "a viewer sees no stop button")
        status = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/jobs/' + arguments[0] + '/stop', {method: 'POST',
                  headers: {'Authorization': 'Bearer ' + sessionStorage.getItem('fedge-token'),
                            'Content-Type': 'application/json'},
                  body: '{"reason": "viewer"}'}).then(r => done(r.status), e => done(String(e)));
            """, job2)
        check(status == 403, f"the API refuses a viewer's stop (HTTP {status})")
        check(admin.get_job(job2).state == job_pb2.JOB_STATE_RUNNING, "the job still runs")

        # An operator can.
        sign_in(driver, url, tokens["operator"])
        driver.get(f"{url}/#/jobs")
        # Found and clicked in one step, retried: the list re-renders every few seconds.
        wait_for("the operator's stop button", lambda: driver.find_element(
            By.CSS_SELECTOR, f"button.stop[data-job-id='{job2}']").click() or True)
        wait_for("the confirmation", lambda: driver.switch_to.alert.accept() or True)
        wait_for("the job to stop", lambda: admin.get_job(job2).state == job_pb2.JOB_STATE_STOPPED,
                 timeout=30, every=0.2)
        wait_for("the page to show it", lambda: driver.find_element(
            By.CSS_SELECTOR, f"#jobs tr[data-job-id='{job2}'] td.state").text == "stopped")
        check(True, "an operator stopped the job from the console")
        driver.save_screenshot(os.path.join(work, "console-jobs.png"))

        # Nothing but the coordinator was asked for anything.
        entries = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat([location.href]);")
        foreign = [e for e in entries if not e.startswith(url + "/")]
        check(not foreign, f"the page loaded {len(entries)} resources, all from {url}")
        print(f"screenshots: {work}/console-*.png")
        print("console_browser_test: PASS")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
