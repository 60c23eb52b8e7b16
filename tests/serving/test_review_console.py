"""The review console through a real browser (Debian's headless Chromium via Selenium), the real app,
Gremlin Server and ElasticMQ; a restart that must lose no case; the verdicts in the next labeling run."""

from __future__ import annotations

import csv
import json
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from console_helpers import HUB_CUSTOMERS, HUB_IP, SEED_DEVICE, console_config, review_queue, wait_for, write_world
from identigraph.config_loader import packaged_default
from identigraph.etl.export import export_snapshot
from identigraph.graph import pseudonym
from identigraph.serving.app import create_app
from identigraph.serving.console.store import ConsoleStore
from test_serving_api import LiveServer

pytestmark = pytest.mark.services
REPO = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT_DIR_ENV = "IDENTIGRAPH_SCREENSHOT_DIR"


@pytest.fixture
def world(settings, graph):
    write_world(graph, pseudonym.from_settings(settings))
    return graph


def _score(url_or_client, customer: str) -> dict:
    headers = {"X-API-Key": "scorer-secret"}
    body = {"customer_id": customer, "action": "login"}
    if isinstance(url_or_client, str):
        r = httpx.post(f"{url_or_client}/v1/score", json=body, headers=headers, timeout=10)
    else:
        r = url_or_client.post("/v1/score", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "review"
    return r.json()


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium / chromium-driver not installed (scripts/ensure-system-deps.sh installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def test_reviewer_works_a_case_in_the_browser(settings, world, browser, spark, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    app_settings, _, _ = review_queue(settings, "identigraph-review-console-browser")
    store_path = tmp_path / "console.sqlite"
    cfg = console_config(store_path)
    with LiveServer(create_app(app_settings, cfg, None), cfg) as live:
        for customer in ("rc-seed", "rc-legit"):
            _score(live.url, customer)
        probe = ConsoleStore(store_path)
        wait_for(lambda: len(probe.open_cases()) == 2, what="both cases in the store")

        # sign in with the reviewer key; the queue lists both cases, oldest first
        browser.get(f"{live.url}/review")
        browser.find_element(By.ID, "key").send_keys("reviewer-secret")
        browser.find_element(By.ID, "login").click()
        assert browser.find_element(By.ID, "reviewer").text == "reviewer"
        rows = browser.find_elements(By.CSS_SELECTOR, "#queue tr.case")
        assert [r.find_element(By.CLASS_NAME, "case-link").text for r in rows] == ["rc-seed", "rc-legit"]
        assert "950" in rows[0].text  # lifetime value
        browser.get(f"{live.url}/review/queue?min_ltv=500")
        assert [e.text for e in browser.find_elements(By.CLASS_NAME, "case-link")] == ["rc-seed"]

        # the case page: drawing, evidence, claim
        browser.find_element(By.CLASS_NAME, "case-link").click()
        assert browser.find_element(By.ID, "customer").text == "rc-seed"
        drawing = browser.find_element(By.CSS_SELECTOR, "svg#neighbourhood")
        assert len(drawing.find_elements(By.CSS_SELECTOR, "circle.customer.blocked")) == 2  # the two fraudsters
        hub = drawing.find_elements(By.CSS_SELECTOR, "g.count-node text")
        drawn = len(drawing.find_elements(By.CSS_SELECTOR, "circle.customer"))
        # the IP's 26 others (the hub customers and rc-legit): 8 drawn, the rest one count node
        assert [h.text for h in hub] == [f"+{HUB_CUSTOMERS + 1 - 8}"]
        assert drawn == 8 + 2  # the fraudsters on both device and card are one node each
        evidence = {r.find_elements(By.TAG_NAME, "td")[0].text: r.text
                    for r in browser.find_elements(By.CSS_SELECTOR, "#evidence tr.identifier-row")}
        assert set(evidence) == {"device", "ip", "card"}
        assert f" {HUB_CUSTOMERS + 2} 0 " in f" {evidence['ip']} " and " 3 2 " in f" {evidence['device']} "
        source = browser.page_source
        assert HUB_IP not in source and SEED_DEVICE not in source  # a review-only key sees references
        if SCREENSHOT_DIR_ENV in __import__("os").environ:
            browser.save_screenshot(str(Path(__import__("os").environ[SCREENSHOT_DIR_ENV]) / "review-console-case.png"))
        case_id = probe.open_cases(customer="rc-seed")[0]["case_id"]
        assert probe.case(case_id)["claimed_by"] == "reviewer"

        # verdict: legitimate, with a note that names an IP (the audit keeps it redacted)
        browser.find_element(By.CSS_SELECTOR, "input[value=legitimate]").click()
        browser.find_element(By.ID, "note").send_keys(f"household; ip {HUB_IP} is a hotel")
        browser.find_element(By.ID, "submit-verdict").click()
        assert "Verdict recorded" in browser.find_element(By.ID, "flash").text
        assert "legitimate" in browser.find_element(By.ID, "verdict-recorded").text

        # the second case: confirm fraud, which asks first (a little JS) and blocks in the graph
        browser.get(f"{live.url}/review/queue")
        assert [e.text for e in browser.find_elements(By.CLASS_NAME, "case-link")] == ["rc-legit"]
        browser.find_element(By.CLASS_NAME, "case-link").click()
        browser.find_element(By.CSS_SELECTOR, "input[value=confirm_fraud]").click()
        browser.find_element(By.ID, "submit-verdict").click()
        WebDriverWait(browser, 5).until(EC.alert_is_present()).accept()
        assert "confirm_fraud" in browser.find_element(By.ID, "verdict-recorded").text

        # the store, the audit, the graph
        verdicts = {v["customer_id"]: v for v in probe.verdicts()}
        assert verdicts["rc-seed"]["verdict"] == "legitimate" and verdicts["rc-seed"]["reviewer"] == "reviewer"
        assert verdicts["rc-seed"]["graph_action"] == "none"  # not blocked: nothing to lift
        assert verdicts["rc-legit"]["graph_action"] == "blocked"
        assert world.submit(lambda g: g.V("customer:rc-legit").values("blocked"), "one_or_none") is True
        audit = probe.audit_lines(verdicts["rc-seed"]["case_id"])
        actions = [a["action"] for a in audit]
        assert actions[0] == "case_received" and {"case_claimed", "case_viewed", "verdict", "graph_action"} <= set(actions)
        line = next(a for a in audit if a["action"] == "verdict")
        assert line["reviewer"] == "reviewer" and line["detail"]["verdict"] == "legitimate"
        assert HUB_IP not in json.dumps(audit) and "[ip]" in line["detail"]["note"]
        assert probe.open_cases() == []
        probe.close()

    # the next labeling run takes the verdicts as labels, over the rule that fires on rc-seed
    from identigraph.labeling.job import run_labeling

    export_snapshot(world, tmp_path / "snapshot")
    report = run_labeling(spark, tmp_path / "snapshot", tmp_path / "labels", as_of=datetime.now(timezone.utc),
                          config=packaged_default("labeling.yaml"), verdicts=store_path)
    with open(tmp_path / "labels" / "labels.csv", newline="") as fh:
        labels = {r["customer_id"]: r for r in csv.DictReader(fh)}
    assert (labels["rc-seed"]["status"], labels["rc-seed"]["label"]) == ("reviewed_legit", "0")
    assert json.loads(labels["rc-seed"]["evidence"])["rules"]  # the kit rule fired, the reviewer's word stands
    assert (labels["rc-legit"]["status"], labels["rc-legit"]["label"]) == ("reviewed_fraud", "1")
    assert labels["rc-hub00"]["status"] == "matured_legit"  # no verdict: maturity as before
    assert report["statuses"]["reviewed_legit"] == 1 and report["statuses"]["reviewed_fraud"] == 1
    # rc-legit was a matured legitimate customer until the reviewer said fraud; rc-seed corrected fraud until
    # the reviewer said legitimate
    assert json.loads(labels["rc-legit"]["evidence"])["review"]["verdict"] == "confirm_fraud"
    assert report["verdicts"] == {"confirm_fraud": 1, "legitimate": 1, "changed_status": 2, "legit_over_rule": 1,
                                  "fraud_over_legit": 1}


def test_cases_survive_a_console_restart(settings, world, tmp_path):
    """Cases received but not decided, a claim, and a message the console took but never deleted (a crash
    between the two): after a restart every case is there once, the claim still holds."""
    app_settings, sqs, url = review_queue(settings, "identigraph-review-console-restart", visibility_s=1)
    store_path = tmp_path / "console.sqlite"
    cfg = console_config(store_path)
    with TestClient(create_app(app_settings, cfg, None)) as client:
        for customer in ("rc-seed", "rc-legit"):
            _score(client, customer)
        probe = ConsoleStore(store_path)
        wait_for(lambda: len(probe.open_cases()) == 2, what="two cases in the store")
        client.post("/review/login", data={"key": "reviewer-secret"})
        case_id = probe.open_cases(customer="rc-seed")[0]["case_id"]
        assert client.get(f"/review/cases/{case_id}").status_code == 200

    # while the console is down: one new case arrives, and one message is "taken" but not deleted
    off = console_config(tmp_path / "unused.sqlite", enabled=False)
    with TestClient(create_app(app_settings, off, None)) as scorer:
        _score(scorer, "rc-hub00")
        _score(scorer, "rc-hub01")
    time.sleep(0.5)
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=2)["Messages"][0]
    assert probe.add_case(json.loads(taken["Body"]))  # stored, then the "crash": never deleted

    with TestClient(create_app(app_settings, cfg, None)) as client:
        assert client.get("/review/queue", follow_redirects=False).status_code == 303  # the session cookie is gone
        client.post("/review/login", data={"key": "reviewer-secret"})
        wait_for(lambda: len(probe.open_cases()) == 4, what="the cases sent while the console was down")
        # the message taken before the crash comes back after its visibility timeout: a duplicate, not a case
        intake = client.app.state.review_console.intake
        wait_for(lambda: intake.duplicates == 1, what="the redelivered message")
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        cases = probe.open_cases()
        assert sorted(c["customer_id"] for c in cases) == ["rc-hub00", "rc-hub01", "rc-legit", "rc-seed"]
        assert probe.case(case_id)["claimed_by"] == "reviewer"
        page = client.get("/review/queue")
        assert page.status_code == 200 and page.text.count('class="case-link"') == 4

    # who sees what: a scoring key cannot sign in; a reviewer with identity:read sees identifiers in clear,
    # and a case another reviewer holds can be read but not decided
    with TestClient(create_app(app_settings, cfg, None)) as client:
        assert client.post("/review/login", data={"key": "scorer-secret"}).status_code == 403
        assert client.post("/review/login", data={"key": "wrong"}).status_code == 401
        assert client.post("/review/login", data={"key": "senior-secret"}).status_code == 200
        page = client.get(f"/review/cases/{case_id}")
        assert HUB_IP in page.text and SEED_DEVICE in page.text and 'id="claimed"' in page.text
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = client.post(f"/review/cases/{case_id}/verdict", data={"csrf": csrf, "verdict": "legitimate"})
        assert refused.status_code == 409 and probe.case(case_id)["verdict"] is None
    probe.close()
