#!/usr/bin/env python3
"""Drives the dashboard of a live `baton serve` in headless Chromium (Selenium), as an operator and a viewer.

Run by DashboardBrowserTests (Tests/BatonTests/DashboardBrowserTests.swift) against a real worker and server:

    python dashboard_browser.py --url http://127.0.0.1:PORT --token OPERATOR --viewer-token VIEWER \
        --approval TASK --dead TASK1,TASK2 --screenshots /tmp/shots [--docs docs/screenshots]

It approves the approval task from the Inbox, redrives the dead letters' fingerprint group from the Dead letters page
(dry run, then confirm), checks that the task pages show the new states, saves a screenshot of every page, and checks
through Chrome's network log and the Resource Timing entries that no request went to any other host than the server.
Exit status 0 when every check passed; otherwise 1 with the reason on stderr.
"""
import argparse
import json
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def fail(message):
    print(f"dashboard_browser: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def api(args, path, token=None):
    request = urllib.request.Request(args.url + path, headers={"Authorization": f"Bearer {token or args.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def browser(args):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--metrics-recording-only", "--no-default-browser-check"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=args.chromedriver))


class Page:
    def __init__(self, args, driver):
        self.args, self.driver = args, driver
        self.shots = []

    def wait(self, condition, what, timeout=30):
        try:
            # The pages re-render as events arrive: an element found a moment ago may be replaced before it is read,
            # so a stale element means "look again", not a failure.
            return WebDriverWait(
                self.driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
            ).until(lambda d: condition(d))
        except TimeoutException:
            self.screenshot("failure")
            fail(f"timed out waiting for {what} (page {self.driver.current_url}):\n"
                 + self.driver.find_element(By.ID, "main").text[:1500])

    def open(self, hash_path, page):
        # Forget the last page's readiness first; the same hash again re-renders through a synthetic hashchange.
        self.driver.execute_script(
            "delete document.body.dataset.ready;"
            "if (location.hash === arguments[0]) window.dispatchEvent(new HashChangeEvent('hashchange'));"
            "else location.hash = arguments[0];", hash_path)
        self.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") in (page, "error"), f"page {page}")
        ready = self.driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
        if ready == "error":
            fail(f"page {hash_path} shows an error: {self.driver.find_element(By.ID, 'main').text}")

    def css(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def screenshot(self, name, docs=False):
        path = os.path.join(self.args.screenshots, f"{name}.png")
        self.driver.save_screenshot(path)
        self.shots.append(path)
        if docs and self.args.docs:
            os.makedirs(self.args.docs, exist_ok=True)
            shutil.copyfile(path, os.path.join(self.args.docs, f"{name}.png"))

    def use_token(self, token):
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        self.wait(lambda d: d.find_element(By.ID, "whoami").text.startswith("http:"), "the token to be accepted")

    def task_status(self, task, statuses, timeout=45):
        self.open(f"#/task/{urllib.parse.quote(task, safe='')}", "task")
        self.wait(lambda d: (self.css("#task-status") or [None])[0] is not None
                  and self.css("#task-status")[0].get_attribute("data-status") in statuses,
                  f"task {task} to show {statuses}", timeout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True, help="an operator token")
    parser.add_argument("--viewer-token", required=True)
    parser.add_argument("--approval", required=True, help="a task of agent `approval` waiting for approve")
    parser.add_argument("--tenant", required=True, help="the approval task's tenant (its own)")
    parser.add_argument("--bulk-approval", help="a second waiting `approval` task of that tenant, for Approve all matching")
    parser.add_argument("--dead", required=True, help="comma-separated dead-lettered tasks of agent `flaky` (permanent)")
    parser.add_argument("--bucket", required=True, help="the failure bucket of the dead letters (theirs alone)")
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--docs", help="copy the README's screenshots here")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    dead_tasks = [t for t in args.dead.split(",") if t]

    # The fingerprint group of our dead letters (all of them share it: same agent, step, bucket and message).
    letters = api(args, f"/v1/dead?agent=flaky&bucket={args.bucket}&limit=10000")["items"]
    fingerprints = {l["fingerprint"] for l in letters if l.get("task_id") in dead_tasks}
    if len(fingerprints) != 1:
        fail(f"expected the dead letters of {dead_tasks} in one fingerprint group, found {fingerprints}")
    fingerprint = fingerprints.pop()

    driver = browser(args)
    page = Page(args, driver)
    try:
        driver.get(args.url + "/#/")
        page.wait(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") is not None, "the first page")

        # A viewer sees the pages but no action button.
        page.use_token(args.viewer_token)
        page.open(f"#/dead?agent=flaky&bucket={args.bucket}", "dead")
        page.wait(lambda d: page.css(f'tr[data-group="{fingerprint}"]'), "the dead-letter group (viewer)")
        if page.css("button[data-action]:not([data-action=members])"):
            fail("a viewer sees action buttons on the Dead letters page")
        page.task_status(args.approval, ["waiting"])
        if page.css("button[data-action]"):
            fail("a viewer sees action buttons on a task page")
        page.open(f"#/inbox?agent=approval&tenant={args.tenant}", "inbox")
        page.wait(lambda d: page.css(f'tr[data-task="{args.approval}"]'), "the approval in the viewer's Inbox")
        if page.css("button[data-action]"):
            fail("a viewer sees action buttons in the Inbox")

        # An operator: overview, then approve from the Inbox.
        page.use_token(args.token)
        page.open("#/", "overview")
        # Failures handed to a person: the cards show what /v1/stats says (read again until both agree: the page
        # re-renders as events arrive).
        def recovery_cards_match(d):
            if not page.css("#recovery-escalated"):
                return False
            r = api(args, "/v1/stats")["recovery"]
            shown = [d.find_element(By.ID, f"recovery-{name}").text for name in ["escalated", "decided", "pending", "redriven"]]
            return shown == [str(r["escalated"]), str(r["decided"]), str(r["pending"]),
                             f'{r["redriven_succeeded"]} / {r["redriven"]}']
        page.wait(recovery_cards_match, "the overview's recovery cards to match /v1/stats")
        page.screenshot("overview")
        page.open(f"#/inbox?agent=approval&tenant={args.tenant}", "inbox")
        row = page.wait(lambda d: page.css(f'tr[data-task="{args.approval}"]'), "the approval task in the Inbox")[0]
        page.screenshot("inbox", docs=True)
        # Edit & approve: a merge patch on the task's input; the woken step receives the edited document.
        row.find_element(By.CSS_SELECTOR, ".comment").send_keys("looks good (browser test)")
        row.find_element(By.CSS_SELECTOR, 'button[data-action="edit-approve"]').click()
        patch = page.wait(lambda d: row.find_elements(By.CSS_SELECTOR, ".edit-patch"), "the edit box")[0]
        patch.clear()
        patch.send_keys('{"note": "edited in the browser"}')
        row.find_element(By.CSS_SELECTOR, 'button[data-action="send-edit"]').click()
        page.wait(lambda d: "Approved" in d.find_element(By.ID, "flash").text, "the approval to be confirmed")
        page.task_status(args.approval, ["succeeded"])
        # Read through `wait`: the task page re-renders as events arrive, so the element may be replaced mid-read.
        page.wait(
            lambda d: all(part in d.find_element(By.ID, "task-result").text
                          for part in ('"approve"', "looks good", "edited in the browser")),
            "the approved task's result to show the edited approval")
        page.wait(lambda d: page.css('tr[data-event="succeeded"]') or page.css('tr[data-event]'), "live events on the task page")
        page.screenshot("task-approved")

        # Approve all matching: the dry run counts the one approval left in this tenant, then a reason confirms it.
        if args.bulk_approval:
            page.open(f"#/inbox?agent=approval&tenant={args.tenant}", "inbox")
            page.wait(lambda d: page.css(f'tr[data-task="{args.bulk_approval}"]'), "the second approval in the Inbox")
            driver.find_element(By.ID, "approve-all").click()
            count = int(page.wait(lambda d: page.css("#approve-all-count"), "the bulk approve dry run")[0].text)
            if count != 1:
                fail(f"the bulk approve dry run selects {count} approvals, not the 1 left in tenant {args.tenant}")
            if api(args, f"/v1/tasks/{urllib.parse.quote(args.bulk_approval, safe='')}")["status"] != "waiting":
                fail("the bulk approve dry run changed the task")
            box = driver.find_element(By.ID, "approve-all-box")
            box.find_element(By.CSS_SELECTOR, ".bulk-reason").send_keys("batch (browser test)")
            box.find_element(By.CSS_SELECTOR, 'button[data-action="approve-all-confirm"]').click()
            page.wait(lambda d: "Approved 1 of 1" in d.find_element(By.ID, "flash").text, "the bulk approve to be confirmed")
            page.task_status(args.bulk_approval, ["succeeded"])

        # Redrive the group: dry run first, then confirm with a reason.
        for task in dead_tasks:
            page.task_status(task, ["dead_lettered"])
        page.screenshot("task-dead-lettered")
        page.open(f"#/dead?agent=flaky&bucket={args.bucket}", "dead")
        group = page.wait(lambda d: page.css(f'tr[data-group="{fingerprint}"]'), "the dead-letter group")[0]
        group.find_element(By.CSS_SELECTOR, 'button[data-action="members"]').click()
        page.wait(lambda d: all(page.css(f'tr[data-group="{fingerprint}"] a[href="#/task/{urllib.parse.quote(t, safe="")}"]')
                                for t in dead_tasks), "the group's members")
        group.find_element(By.CSS_SELECTOR, 'button[data-action="group-redrive"]').click()
        count = int(page.wait(lambda d: page.css("#dry-run-count"), "the dry run")[0].text)
        if count != len(dead_tasks):
            fail(f"the dry run selects {count} dead letters, not our {len(dead_tasks)}")
        for task in dead_tasks:
            if not api(args, f"/v1/tasks/{urllib.parse.quote(task, safe='')}")["status"] == "dead_lettered":
                fail(f"the dry run changed task {task}")
        page.screenshot("dead-letters", docs=True)
        group.find_element(By.CSS_SELECTOR, ".bulk-reason").send_keys("provider fixed (browser test)")
        group.find_element(By.CSS_SELECTOR, 'button[data-action="confirm-bulk"]').click()
        page.wait(lambda d: f"Redrove {len(dead_tasks)} of {len(dead_tasks)}" in d.find_element(By.ID, "flash").text,
                  "the redrive to be confirmed")
        for task in dead_tasks:
            page.task_status(task, ["succeeded"])
        # The task page's branch tree shows the redrive's branch (from the history), and two checkpoints diff.
        branch = page.wait(lambda d: page.css('li[data-branch="1"]'), "the redrive's branch in the branch tree")[0]
        if "redriven" not in branch.text or "provider fixed" not in branch.text:
            fail(f"the branch tree does not say why branch 1 exists: {branch.text}")
        driver.find_element(By.CSS_SELECTOR, 'button[data-view="diff"]').click()
        page.wait(lambda d: page.css(".diff table, .diff p"), "the checkpoint diff")
        page.screenshot("task-redriven")

        # The other pages.
        page.open("#/tasks?agent=flaky", "tasks")
        page.wait(lambda d: all(page.css(f'tr[data-task="{t}"] [data-status="succeeded"]') for t in dead_tasks),
                  "the redriven tasks in the Tasks list")
        page.screenshot("tasks")
        page.open("#/workers", "workers")
        page.wait(lambda d: page.css("tr[data-worker]"), "a worker")
        page.screenshot("workers")
        page.open("#/audit", "audit")
        page.wait(lambda d: "dead.redrive" in d.find_element(By.ID, "main").text, "the redrive in the audit stream")
        page.screenshot("audit")
        # A phone-sized window still renders.
        driver.set_window_size(390, 844)
        page.open("#/tasks?agent=flaky", "tasks")
        page.screenshot("tasks-phone")

        # Every request went to the server: Chrome's network log and the Resource Timing entries.
        server = urllib.parse.urlsplit(args.url).netloc
        urls = set()
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                urls.add(message["params"]["request"]["url"])
        urls |= set(driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"))
        foreign = sorted(u for u in urls
                         if not u.startswith("data:") and urllib.parse.urlsplit(u).netloc != server)
        if foreign:
            fail(f"requests to other hosts than {server}: {foreign}")
        if not any("/events" in u for u in urls):
            fail("the task page opened no event stream")
        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" and ("Content Security Policy" in e["message"] or "Uncaught" in e["message"])]
        if problems:
            fail(f"the browser console shows errors: {problems}")
        print(json.dumps({"requests": len(urls), "hosts": [server], "screenshots": page.shots}))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
