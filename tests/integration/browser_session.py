"""A researcher's browser session, for tests: headless Chromium (Debian's) driven by Selenium.

    python browser_session.py HUB_URL USER PASSWORD PROJECT FILE SCREENSHOT

Signs in on the hub's login page, starts the named server PROJECT from the spawn page, waits
for JupyterLab, opens FILE (a path from the file browser's root, e.g. data/<dataset>/x.csv),
saves a screenshot and prints `opened <tab title>`. Exit code 1 with the reason otherwise.

Run it inside the node's network namespace (`nsenter -t <holder> -n --`): the hub's proxy is
there, and the namespace has no route out, so neither the browser nor anything it might try
on its own (updates, safe browsing, DNS) can send a packet to any other address. The flags
below turn that background traffic off as well.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUIET = (
    "--headless=new",
    "--no-sandbox",  # root in a test namespace; the namespace is the sandbox here
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
    "--window-size=1400,900",
)


def main(hub: str, user: str, password: str, project: str, path: str, screenshot: str) -> int:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in QUIET:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='tre-browser-')}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    wait = WebDriverWait(driver, 180)
    try:
        driver.get(f"{hub}/hub/login")
        driver.find_element(By.ID, "username_input").send_keys(user)
        driver.find_element(By.ID, "password_input").send_keys(password)
        driver.find_element(By.ID, "login_submit").click()
        wait.until(expected_conditions.url_contains("/hub/"))
        # The spawn form offers the project's one profile (its data, its end date); Start
        # launches the named server and the page follows it to JupyterLab.
        driver.get(f"{hub}/hub/spawn/{user}/{project}")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "spawn_form")))
        driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()
        wait.until(expected_conditions.url_contains(f"/user/{user}/{project}/lab"))
        wait.until(expected_conditions.presence_of_element_located((By.ID, "jp-main-dock-panel")))
        driver.get(f"{hub}/user/{user}/{project}/lab/tree/{path}")
        name = path.rsplit("/", 1)[-1]
        tab = wait.until(
            expected_conditions.presence_of_element_located(
                (By.XPATH, f"//li[contains(@class, 'lm-TabBar-tab')][contains(., '{name}')]")
            )
        )
        time.sleep(2)  # let the grid paint before the screenshot
        driver.save_screenshot(screenshot)
        print(f"opened {tab.text.strip()}")
        return 0
    except TimeoutException:
        driver.save_screenshot(screenshot)
        print(f"timed out at {driver.current_url}: {driver.title}")
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
