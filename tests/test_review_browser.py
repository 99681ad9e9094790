"""The review report in a real browser: headless Chromium filters by a class, records two decisions,
downloads decisions.csv, and `emlc clean --clean` accepts that file as a second verified manifest.

Needs the Debian packages `chromium` and `chromium-driver` (.ci/run installs them) and `selenium`
(the `test` extra); skips with the reason where they are missing."""
from __future__ import annotations

import csv
import shutil
import subprocess
import time

import pytest
from typer.testing import CliRunner

from emlc_cli import review
from emlc_cli.cli.app import app
from tests.conftest import write_csv
from tests.test_review import fake_run, make_folder

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]
INSTALL = "install the Debian packages chromium and chromium-driver (.ci/run does: apt-get install -y chromium chromium-driver)"


def find_chromium() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = "chromium" if browser is None else "chromedriver"
        pytest.skip(f"headless Chromium not available ({missing} not on PATH); {INSTALL}")
    try:
        subprocess.run([driver, "--version"], capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"chromedriver does not run ({err}); {INSTALL}")
    return browser, driver


@pytest.fixture
def browser(tmp_path):
    binary, driver_path = find_chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as err:  # noqa: BLE001 - any start failure is an environment problem, reported as a skip
        pytest.skip(f"headless Chromium did not start: {str(err).splitlines()[0]}")
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def report_run(tmp_path) -> dict:
    """A real image folder and a run folder over it (60 changed labels: more than one page of 48)."""
    root = tmp_path / "images"
    rows, clean = make_folder(root, per_class=30, seed=3)
    verified = dict(clean)
    classes = ["blue", "green", "red"]
    run_rows = []
    for n, (path, given) in enumerate(rows):
        corrected = classes[(classes.index(given) + 1) % 3] if path not in verified and n % 3 else given
        run_rows.append((path, given, corrected, 0.5 + (n % 50) / 100))
    run = fake_run(tmp_path, run_rows, root=root, verified=clean)
    write_csv(tmp_path / "clean.csv", clean)
    return {"run": run, "root": root, "clean": tmp_path / "clean.csv", "rows": run_rows, "verified": verified}


def visible_cards(driver, section: str) -> list:
    return [c for c in driver.find_elements("css selector", f"#{section} .card") if c.is_displayed()]


def test_browser_filter_decide_download_and_clean_again(browser, report_run, tmp_path):
    driver, downloads = browser
    from selenium.webdriver.support.ui import Select

    report = review.write_report(report_run["run"], tmp_path / "report.html")
    driver.get(report.path.resolve().as_uri())
    wait_for(lambda: driver.execute_script("return !!window.emlcReview"), what="the report's script")
    changed = [r for r in report_run["rows"] if r[1] != r[2] and r[0] not in report_run["verified"]]
    assert len(changed) > 48
    assert len(visible_cards(driver, "changed")) == 48  # one page

    Select(driver.find_element("id", "filter-class")).select_by_value("red")
    cards = wait_for(lambda: visible_cards(driver, "changed") if len(visible_cards(driver, "changed")) < 48 else None,
                     what="the class filter")
    red = [r for r in changed if "red" in (r[1], r[2])]
    assert len(cards) == min(48, len(red))
    assert all("red" in (c.get_attribute("data-given"), c.get_attribute("data-corrected")) for c in cards)

    first, second = cards[0], cards[1]
    first.find_element("css selector", 'input[data-choice="corrected"]').click()
    third = next(c for c in ["blue", "green", "red"]
                 if c not in (second.get_attribute("data-given"), second.get_attribute("data-corrected")))
    Select(second.find_element("css selector", "select.other-label")).select_by_value(third)
    assert driver.find_element("id", "decision-count").text == "2 decisions"
    assert second.find_element("css selector", 'input[data-choice="other"]').is_selected()

    driver.find_element("id", "download").click()
    target = downloads / "decisions.csv"
    wait_for(lambda: target.is_file() and not list(downloads.glob("*.crdownload")), what="decisions.csv to download")
    with target.open(newline="", encoding="utf-8") as handle:
        decided = list(csv.reader(handle))
    expected = sorted([[first.get_attribute("data-path"), first.get_attribute("data-corrected"), "1"],
                       [second.get_attribute("data-path"), third, "1"]])
    assert decided == [["path", "label", "picked"], *expected]  # picked: emlc chose them, no random sample

    result = CliRunner().invoke(app, ["clean", str(report_run["root"]), "--clean", str(report_run["clean"]),
                                      "--clean", str(target), "--out", str(tmp_path / "next"), "--dry-run", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"{len(report_run['verified']) + 2} verified" in result.output

    driver.refresh()  # decisions survive a reload (localStorage, per run)
    wait_for(lambda: driver.find_element("id", "decision-count").text == "2 decisions", what="decisions after reload")
