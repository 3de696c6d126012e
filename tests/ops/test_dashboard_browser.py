"""The dashboard in a real browser: Debian's headless Chromium against a real listener and database."""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from support import ROOT, old_app
from support.http import request, running
from support.roles import listener_login
from support.world import World

# The slow tier: a real browser.
pytestmark = pytest.mark.slow

# What needs an operator first, then the ledger's health and history.
SECTIONS = [
    "cards",
    "dead-letters-section",
    "unfunded-section",
    "out-of-sync-section",
    "replay-section",
    "legacy-section",
    "listeners-section",
    "lag-section",
    "recent-section",
]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The README shows docs/dashboard.png; LISTENER_UPDATE_SCREENSHOT=1 refreshes it, else it goes to tmp_path.
SCREENSHOT = ROOT / "docs" / "dashboard.png"
TOKEN = "browser-test-token-5b1f"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium from Debian, driven by its own chromedriver; nothing is downloaded."""
    yield from _chromium(monkeypatch, javascript=True)


@pytest.fixture
def browser_without_js(monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """The same, with JavaScript turned off for every page, as some operators browse."""
    yield from _chromium(monkeypatch, javascript=False)


def _chromium(monkeypatch: pytest.MonkeyPatch, *, javascript: bool) -> Iterator[webdriver.Chrome]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: apt-get install -y chromium chromium-driver")
    # selenium-manager must not fetch a browser or a driver of its own.
    monkeypatch.setenv("SE_OFFLINE", "true")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _authenticate(driver: webdriver.Chrome, token: str) -> None:
    """Send HTTP Basic on every request of this browser, as a password manager would."""
    header = "Basic " + base64.b64encode(f"operator:{token}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": header}})


def _count(world: World, sql: str, params: list[object] | None = None) -> int:
    row = world.conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row["n"])


def _wait_for(driver: webdriver.Chrome, element_id: str) -> None:
    """Wait for the page a click navigates to."""
    WebDriverWait(driver, 15).until(expected_conditions.presence_of_element_located((By.ID, element_id)))


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _seed_an_hour_of_history(world: World) -> None:
    """Archived events over the last hour, as a listener that ran all along would have left them."""
    world.conn.execute(
        """INSERT INTO pgmq.a_booking_events (msg_id, read_ct, enqueued_at, archived_at, vt, message)
           SELECT 1000000 + m * 1000 + i, 1, x.t - x.lag, x.t, x.t,
                  jsonb_build_object('type', 'booking.changed', 'v', 1,
                                     'booking_id', gen_random_uuid(), 'source', 'history')
           FROM generate_series(1, 58) AS m,
                LATERAL generate_series(1, 20 + (m * 7) % 30) AS i,
                LATERAL (SELECT date_trunc('minute', now()) - make_interval(mins => m)
                                + make_interval(secs => i) AS t,
                                make_interval(secs => 0.02 + (m % 10) * 0.03 + (i % 7) * 0.01) AS lag) AS x"""
    )


def test_dashboard_shows_what_the_database_holds(
    world: World, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    pack = world.pack(sessions_total=2)
    bookings = world.bookings(pack, count=3)
    trace = old_app.new_trace()
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        # An old calendar tab completes one booking and echoes it with use_session (absorbed).
        assert old_app.complete_then_use_session(world, bookings[0], pack, trace=trace)
        for b in bookings[1:]:
            world.set_status(b, "completed")
        world.send_raw("'\"not an event\"'::jsonb")
        world.ledger.drain(listener_running=True)
        _seed_an_hour_of_history(world)

        # Without the token: nothing of the dashboard.
        assert request(f"{proc.base}/").status == 401
        browser.get(f"{proc.base}/")
        assert 'id="queue-depth"' not in browser.page_source

        _authenticate(browser, TOKEN)
        browser.get(f"{proc.base}/")
        assert browser.title == "session ledger"
        assert _text(browser, "readiness") == "ready"
        queue = _count(world, "SELECT count(*) AS n FROM pgmq.q_booking_events")
        dead = _count(world, "SELECT count(*) AS n FROM pgmq.q_booking_events_dlq")
        paid = _count(world, "SELECT count(*) AS n FROM session_ledger.charges WHERE state = 'paid'")
        unfunded = _count(world, "SELECT count(*) AS n FROM session_ledger.charges WHERE state = 'unfunded'")
        assert (dead, paid, unfunded) == (1, 2, 1)
        assert _text(browser, "queue-depth") == str(queue)
        assert _text(browser, "dead-letters") == str(dead)
        assert _text(browser, "paid") == str(paid)
        assert _text(browser, "unfunded") == str(unfunded)
        assert _text(browser, "out-of-sync") == "0"
        [letter] = world.dead_letters()
        reasons = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#dead-letter-table td.reason")]
        assert reasons == [letter["reason"]]
        assert "not an event" in _text(browser, "dead-letter-table")
        unfunded_table = _text(browser, "unfunded-table")
        [row] = world.conn.execute(
            "SELECT booking_id, reason FROM session_ledger.charges WHERE state = 'unfunded'"
        )
        assert str(row["booking_id"]) in unfunded_table and row["reason"] in unfunded_table
        hosts = browser.find_elements(By.CSS_SELECTOR, "#listeners tr")
        assert len(hosts) == 2, "one header row and one live listener"
        window = "archived_at >= date_trunc('minute', now()) - interval '59 minutes'"
        archived = _count(world, f"SELECT count(*) AS n FROM pgmq.a_booking_events WHERE {window}")
        minutes = _count(
            world,
            f"SELECT count(DISTINCT date_trunc('minute', archived_at)) AS n FROM pgmq.a_booking_events WHERE {window}",
        )
        assert archived > 3 and minutes > 50
        assert f"({archived} in all)" in browser.find_element(By.TAG_NAME, "main").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#lag-chart rect.bar")) == minutes
        # p50 and p99 each as a line with a marker per minute, across the card's whole width.
        assert len(browser.find_elements(By.CSS_SELECTOR, "#lag-chart polyline")) == 2
        for quantile in ("p50", "p99"):
            assert len(browser.find_elements(By.CSS_SELECTOR, f"#lag-chart circle.{quantile}")) == minutes
        chart = browser.find_element(By.ID, "lag-chart").size["width"]
        card = browser.execute_script(
            "const s = getComputedStyle(arguments[0]);"
            "return arguments[0].clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);",
            browser.find_element(By.ID, "lag-section"),
        )
        assert abs(chart - card) <= 1, (chart, card)

        # What needs acting on comes first, and every top card links to its section.
        order = [e.get_attribute("id") for e in browser.find_elements(By.CSS_SELECTOR, "main > section")]
        assert order == SECTIONS
        cards = browser.find_elements(By.CSS_SELECTOR, "a.card")
        assert len(cards) == 9
        for card_link in cards:
            anchor = str(card_link.get_attribute("href")).split("#", 1)[1]
            assert anchor in SECTIONS[1:], anchor

        # The app's old calls, and who caused each ledger row.
        absorbed = world.conn.execute(
            "SELECT booking_id FROM session_ledger.pack_calls WHERE outcome = 'absorbed'"
        ).fetchall()
        assert absorbed == [{"booking_id": bookings[0]}]
        assert _text(browser, "legacy-absorbed-total") == "1" == _text(browser, "legacy-absorbed")
        assert _text(browser, "legacy-absorbing") == "on"
        assert str(bookings[0]) in _text(browser, "absorbed-table")
        [by] = [
            row.find_element(By.CSS_SELECTOR, "td.caused-by").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#recent tr")
            if str(bookings[0]) in row.text
        ]
        short_uid = str(world.org.trainer_user_id)[:8]
        # The tests' own login stands in for PostgREST's, so the user is shown as that login's claim.
        login = world.conn.info.user
        assert by == f"authenticated {short_uid} claimed by {login} trace {trace.split('-')[1][:8]}"

        height = int(browser.execute_script("return document.documentElement.scrollHeight"))
        # The window's frame takes some of its height; leave room so the whole page fits.
        browser.set_window_size(1280, min(max(height, 800), 4000) + 200)
        shot = (
            SCREENSHOT if os.environ.get("LISTENER_UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
        )
        assert browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        # A card's link takes the reader to its section, further down than the window shows.
        browser.set_window_size(1280, 1000)
        assert browser.execute_script("return window.scrollY") == 0
        browser.find_element(By.CSS_SELECTOR, 'a.card[href="#recent-section"]').click()
        assert browser.execute_script("return location.hash") == "#recent-section"
        assert browser.execute_script("return window.scrollY") > 0

        # Redrive through the page: select, review, confirm.
        browser.find_element(By.CSS_SELECTOR, f'input[name="id"][value="{letter["msg_id"]}"]').click()
        browser.find_element(By.ID, "redrive").click()
        _wait_for(browser, "confirm-redrive")
        assert "Redrive 1 dead letter(s)?" in browser.page_source
        assert len(world.dead_letters()) == 1 and world.dead_letters()[0]["msg_id"] == letter["msg_id"]
        browser.find_element(By.ID, "confirm-redrive").click()
        _wait_for(browser, "message")
        assert _text(browser, "message") == "Moved 1 dead letter(s) back onto the queue."
        archived_letter = _count(
            world,
            "SELECT count(*) AS n FROM pgmq.a_booking_events_dlq WHERE msg_id = %s",
            [letter["msg_id"]],
        )
        assert archived_letter == 1
        logs = proc.stop()
    assert "redrove 1 of 1 dead letter(s)" in logs
    assert TOKEN not in logs


def test_no_token_means_no_dashboard_in_the_browser(world: World, browser: webdriver.Chrome) -> None:
    with running(world.ledger.dsn) as proc:
        _authenticate(browser, TOKEN)
        browser.get(f"{proc.base}/")
        assert "not found" in browser.page_source
        assert request(f"{proc.base}/", token=TOKEN).status == 404
        browser.get(f"{proc.base}/metrics")
        assert "session_ledger_queue_depth" in browser.page_source
        proc.stop()


def test_names_search_a_packs_page_refresh_and_discard_without_javascript(
    world: World, browser_without_js: webdriver.Chrome
) -> None:
    browser = browser_without_js
    # JavaScript is really off: a page's script does not run.
    browser.get("data:text/html,<title>static</title><script>document.title = 'scripted'</script>")
    assert browser.title == "static"
    pack = world.pack(sessions_total=1)
    bookings = world.bookings(pack, count=2)
    for b in bookings:
        world.set_status(b, "completed")
    world.send_raw("'\"not an event\"'::jsonb")
    world.drain()
    [letter] = world.dead_letters()
    client = world.org.client_id
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        _authenticate(browser, TOKEN)
        browser.get(f"{proc.base}/")
        assert browser.title == "session ledger"
        # The client and the pack by the app's names, each uuid on hover.
        name = browser.find_element(By.CSS_SELECTOR, "#unfunded-table span.client")
        assert (name.text, name.get_attribute("title")) == ("client of Studio A", f"client {client}")
        pack_link = browser.find_element(By.CSS_SELECTOR, "#unfunded-table a.pack")
        assert pack_link.text.startswith("pack · client of Studio A · ")
        assert pack_link.get_attribute("title") == f"pack {pack}"

        # Auto-refresh is on, and one click turns it off.
        assert len(browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')) == 1
        browser.find_element(By.ID, "refresh-toggle").click()
        _wait_for(browser, "refresh-toggle")
        assert browser.current_url.endswith("/?refresh=off")
        assert browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]') == []
        assert _text(browser, "auto-refresh") == "auto-refresh off · turn on"

        # Search by a part of the client's name, then follow a pack to its page: still not refreshing.
        browser.find_element(By.ID, "search").send_keys("STUDIO a")
        browser.find_element(By.ID, "search-button").click()
        _wait_for(browser, "search-clients")
        assert _text(browser, "search-clients") == "client of Studio A"
        browser.find_element(By.CSS_SELECTOR, "#search-packs a.pack").click()
        _wait_for(browser, "pack-balance")
        assert _text(browser, "pack-balance") == "1/1"
        assert _text(browser, "pack-counts") == "1 charged, 1 unfunded, 0 released, 0 direct call(s)"
        assert browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]') == []
        charged = {r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "#pack-charged tr")[1:]}
        unfunded = {
            r.text.split()[0] for r in browser.find_elements(By.CSS_SELECTOR, "#pack-unfunded tr")[1:]
        }
        assert charged | unfunded == {str(b) for b in bookings} and len(charged) == len(unfunded) == 1

        # Discard the dead letter through the page: select, review, give a reason, confirm.
        browser.get(f"{proc.base}/?refresh=off")
        browser.find_element(By.CSS_SELECTOR, f'input[name="id"][value="{letter["msg_id"]}"]').click()
        browser.find_element(By.ID, "discard").click()
        _wait_for(browser, "confirm-discard")
        assert "Discard 1 dead letter(s)?" in browser.page_source
        # Without a reason the browser itself holds the form back.
        browser.find_element(By.ID, "confirm-discard").click()
        assert browser.find_elements(By.ID, "confirm-discard") and len(world.dead_letters()) == 1
        browser.find_element(By.ID, "discard-reason").send_keys("malformed by a test producer")
        browser.find_element(By.ID, "confirm-discard").click()
        _wait_for(browser, "message")
        assert (
            _text(browser, "message")
            == "Discarded 1 dead letter(s); each is archived with who, when and why."
        )
        assert world.dead_letters() == []
        browser.get(f"{proc.base}/?refresh=off")
        assert _text(browser, "dead-letters") == "0"
        logs = proc.stop()
    assert f"discarded 1 of 1 dead letter(s) [{letter['msg_id']}]" in logs
