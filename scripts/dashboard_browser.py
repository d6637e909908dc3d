#!/usr/bin/env python3
"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium), against a running jobq (scripts/e2e.py starts one and calls this).

It loads the page, signs in with the dashboard's token, finds a job created through the API on the
jobs page and its attempts on its own page, requeues a dead job by clicking in the DLQ and checks
through the API that the job changed (and that the audit log names the dashboard and the person),
requeues everything that matches after the dry-run count, sets and takes off a queue's concurrency
limit, pauses and resumes a schedule, and checks that the read-only token's
click changes nothing. The page must load nothing from another origin and log no browser error.

Prints one `ok   - ...` or `FAIL - ...` line per check and exits non-zero on any failure.
Usage: dashboard_browser.py BASE_URL TOKEN READONLY_TOKEN JOB_ID DEAD_ID DEAD_ID2 [SCREENSHOT]
"""

import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 20
failures = 0


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"ok   - dashboard: {name}", flush=True)
    else:
        failures += 1
        print(f"FAIL - dashboard: {name}" + (f": {detail}" if detail else ""), flush=True)
    return ok


SCHEDULE = "e2e-dashboard-nightly"  # created by scripts/e2e.py


def api(base, method, path):
    req = urllib.request.Request(base + path, method=method, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=40) as resp:
        return json.loads(resp.read().decode())


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The Debian driver, named explicitly: Selenium then downloads nothing.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(driver, css, what):
    try:
        return WebDriverWait(driver, WAIT).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))
    except TimeoutException:
        check(what, False, f"no {css} after {WAIT} s; message: {message(driver)!r}")
        return None


def message(driver):
    try:
        return driver.find_element(By.ID, "message").text
    except Exception:
        return ""


def wait_message(driver, text):
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text.lower() in message(d).lower())
        return True
    except TimeoutException:
        return False


def sign_in(driver, base, token, name):
    driver.get(base + "/dashboard")
    driver.execute_script("sessionStorage.clear()")
    driver.get(base + "/dashboard#overview")
    field = wait_for(driver, "#token", "the page loads")
    if field is None:
        return False
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "#signin button").click()
    return True


def history(base, job_id):
    return len(api(base, "GET", f"/jobs/{job_id}").get("history") or [])


def history_grows(base, job_id, before):
    """Waits up to 30 s for the job to have more attempts than `before`; returns how many it has."""
    deadline, after = time.monotonic() + 30, before
    while time.monotonic() < deadline and after <= before:
        time.sleep(0.3)
        after = history(base, job_id)
    return after


def main():
    base, token, readonly, job_id, dead_id, dead_id2 = sys.argv[1:7]
    screenshot = sys.argv[7] if len(sys.argv) > 7 else None
    driver = browser()
    try:
        # Without a token the page says what is missing instead of showing data.
        driver.get(base + "/dashboard#overview")
        check("without a token the page asks for one",
              wait_message(driver, "token"), f"message: {message(driver)!r}")

        if not sign_in(driver, base, token, "e2e-tester"):
            return 1
        row = wait_for(driver, 'tr[data-queue="default"]', "the overview lists the default queue")
        check("the overview lists the default queue", row is not None)

        driver.get(base + "/dashboard#jobs")
        row = wait_for(driver, f'tr[data-job-id="{job_id}"]', "the jobs page shows the job created through the API")
        check("the jobs page shows the job created through the API", row is not None and "COMPLETED" in row.text,
              row.text if row else "")
        if row is not None:
            row.find_element(By.CSS_SELECTOR, "a").click()
            table = wait_for(driver, "#attempts tbody tr", "the job's page shows its attempts")
            check("the job's page shows its payload and attempts",
                  table is not None and "dashboard" in driver.find_element(By.TAG_NAME, "pre").text,
                  driver.find_element(By.TAG_NAME, "main").text[:300])
        if screenshot:
            driver.get(base + "/dashboard#overview")
            wait_for(driver, 'tr[data-queue="default"]', "the overview for the screenshot")
            time.sleep(0.5)
            driver.save_screenshot(screenshot)

        # A requeue by clicking: the job runs again (FAIL_ALWAYS: dies again, one more attempt).
        before = history(base, dead_id)
        driver.get(base + "/dashboard#dlq")
        button = wait_for(driver, f'button.requeue[data-job-id="{dead_id}"]', "the DLQ lists the dead job")
        if button is not None:
            button.click()
            check("clicking Requeue says it is done", wait_message(driver, "requeued"), message(driver))
            after = history_grows(base, dead_id, before)
            check("the requeued job ran again (its history grew)", after > before, f"{before} -> {after} attempts")
            entries = api(base, "GET", "/audit?limit=20")["items"]
            check("the audit log names the dashboard and the person",
                  any(e["action"] == "job.requeue" and e["jobId"] == dead_id and e["actor"] == "dashboard"
                      and e["onBehalfOf"] == "e2e-tester" for e in entries), json.dumps(entries)[:400])

        # Everything that matches, after the dry-run count.
        driver.get(base + "/dashboard#dlq")
        form = wait_for(driver, ".panel form", "the bulk requeue form")
        if form is not None:
            queue = form.find_element(By.NAME, "queue")
            queue.send_keys("bulk-e2e")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            go = wait_for(driver, "#bulk-go", "the dry run's count")
            counted = driver.find_element(By.ID, "bulk-result").text if go else ""
            check("the dry run counts the one dead job of the queue", counted.startswith("1 dead job matches"), counted)
            if go is not None:
                before = history(base, dead_id2)
                go.click()
                check("the bulk requeue finishes", wait_message(driver, "requeued 1 job"), message(driver))
                after = history_grows(base, dead_id2, before)
                check("the bulk-requeued job ran again", after > before, f"{before} -> {after} attempts")

        # A queue's concurrency limit set and taken off by typing and clicking, checked through the API.
        # No reload between the two: the field waited for is the one rendered after the last change
        # (its value attribute says the limit it shows).
        driver.get(base + "/dashboard#overview")
        for typed, want, said, shown in (("3", 3, "at most 3", ":not([value])"), ("", None, "no concurrency limit", '[value="3"]')):
            field = wait_for(driver, f'input.limit[data-queue="default"]{shown}', "the overview offers a limit for default")
            if field is None:
                break
            field.clear()
            if typed:
                field.send_keys(typed)
            field.find_element(By.XPATH, "..").find_element(By.CSS_SELECTOR, "button.set-limit").click()
            check(f"setting the limit to {typed or 'nothing'} says so", wait_message(driver, said), message(driver))
            limit = api(base, "GET", "/queues/default")["concurrency"]
            check(f"the queue's limit is {want} (GET /queues/{{name}})", limit == want, f"concurrency={limit}")

        # A schedule paused and resumed by clicking, checked through the API.
        driver.get(base + "/dashboard#schedules")
        for click, want, said in (("pause", True, "paused"), ("resume", False, "resumed")):
            button = wait_for(driver, f'button.{click}[data-schedule="{SCHEDULE}"]', f"the schedules page offers {click}")
            if button is None:
                break
            button.click()
            check(f"clicking {click.title()} says it is {said}", wait_message(driver, said), message(driver))
            paused = api(base, "GET", f"/schedules/{SCHEDULE}")["paused"]
            check(f"the schedule is {said} (GET /schedules/{{name}})", paused is want, f"paused={paused}")
        # The page loaded nothing from elsewhere and logged no error (a CSP violation would be one).
        origins = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        check("every request stayed on the page's origin", all(o == base for o in origins), str(set(origins)))
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
                  and "401" not in e.get("message", "") and "403" not in e.get("message", "")]
        check("the browser logged no error", not errors, json.dumps(errors)[:400])

        # A slow answer for a page the user has left never draws over the page they went to. The
        # overview's read is held back 1.5 s (on AWS, two Lambdas can answer in any order); the
        # user goes on to the DLQ meanwhile.
        driver.get(base + "/dashboard#dlq")
        if wait_for(driver, "table#dlq", "the DLQ page shows") is not None:
            driver.execute_script("""
                const real = window.fetch;
                window.fetch = (url, init) => String(url).endsWith('/api/queues')
                  ? new Promise((resolve) => setTimeout(resolve, 1500)).then(() => real(url, init))
                  : real(url, init);
                location.hash = '#overview';
                setTimeout(() => { location.hash = '#dlq'; }, 100);
            """)
            time.sleep(3)
            shown = driver.find_element(By.ID, "view").find_elements(By.TAG_NAME, "h2")
            check("a late answer for a page left behind does not replace the page shown",
                  "Dead jobs" in [h.text for h in shown] and "Queues" not in [h.text for h in shown] and driver.find_elements(By.CSS_SELECTOR, "table#dlq"),
                  f"headings shown: {[h.text for h in shown]}; message: {message(driver)!r}")

        # The read-only token sees, but its click changes nothing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and api(base, "GET", f"/jobs/{dead_id}")["status"] != "FAILED":
            time.sleep(0.3)
        before = history(base, dead_id)
        if sign_in(driver, base, readonly, "viewer"):
            driver.get(base + "/dashboard#dlq")
            button = wait_for(driver, f'button.requeue[data-job-id="{dead_id}"]', "the read-only token sees the DLQ")
            if button is not None:
                button.click()
                check("the read-only token's requeue is refused", wait_message(driver, "read but not act"),
                      message(driver))
                time.sleep(1)
                job = api(base, "GET", f"/jobs/{dead_id}")
                check("and the job did not change", job["status"] == "FAILED" and len(job["history"]) == before,
                      f"{job['status']} {len(job['history'])} attempts, was {before}")
    finally:
        driver.quit()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
