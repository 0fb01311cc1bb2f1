"""Browser sessions for tests: headless Chromium (Debian's) driven by Selenium.

    python browser_session.py lab HUB_URL USER PASSWORD PROJECT FILE SCREENSHOT
    python browser_session.py work HUB_URL USER PASSWORD PROJECT DATASET_FILE,NOTEBOOK SCREENSHOT
    python browser_session.py review HUB_URL USER PASSWORD NAMESPACE/NAME VOTE SCREENSHOT

`lab`, a researcher: signs in on the hub's login page, starts the named server PROJECT from
the spawn page, waits for JupyterLab, opens FILE (a path from the file browser's root, e.g.
data/<dataset>/x.csv), saves a screenshot and prints `opened <tab title>`.

`work`, a researcher behind the browser gate (DETAIL is DATASET_FILE,NOTEBOOK): the dataset
file is refused with the gate's message (`refused: <message>`); the notebook's plot cell runs,
the plot shows, the notebook is saved (`plotted and saved <name>`).

`review`, an output checker: signs in on the hub, opens the airlock's page
(/services/airlock/, signed in through the hub's OAuth), opens the export NAME from the list,
prints the automated checks of each file as the files table shows them (`checks <path>: <text>`,
one line each), chooses VOTE (approve, changes or reject) for every file with a comment,
submits the review, and once the page shows it prints `reviewed <path>=<vote>,...` as listed
under the reviewer's name, then saves a screenshot.

Exit code 1 with the reason otherwise (a screenshot of where it stopped is saved too).

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
from collections.abc import Callable

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

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
AIRLOCK_PAGE = "/services/airlock/"
REVIEW_COMMENT = "checked in the browser test"


def chromium() -> WebDriver:
    """The one browser of every session: Debian's Chromium and chromedriver, offline."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in QUIET:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='tre-browser-')}")
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def sign_in(
    driver: WebDriver, wait: WebDriverWait[WebDriver], hub: str, user: str, password: str
) -> None:
    driver.get(f"{hub}/hub/login")
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys(password)
    driver.find_element(By.ID, "login_submit").click()
    wait.until(expected_conditions.url_contains("/hub/"))


def start_lab(
    driver: WebDriver, wait: WebDriverWait[WebDriver], hub: str, user: str, project: str
) -> None:
    # The spawn form offers the project's one profile (its data, its end date); Start
    # launches the named server and the page follows it to JupyterLab.
    driver.get(f"{hub}/hub/spawn/{user}/{project}")
    wait.until(expected_conditions.presence_of_element_located((By.ID, "spawn_form")))
    driver.find_element(By.CSS_SELECTOR, "#spawn_form [type=submit]").click()
    wait.until(expected_conditions.url_contains(f"/user/{user}/{project}/lab"))
    wait.until(expected_conditions.presence_of_element_located((By.ID, "jp-main-dock-panel")))


def _click(driver: WebDriver, css: str) -> bool:
    """Click the first element matching `css`; False while there is none or it went stale."""
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
    except (
        NoSuchElementException,
        StaleElementReferenceException,
        ElementNotInteractableException,
        ElementClickInterceptedException,  # something (a loading overlay) is in front of it
    ):
        return False
    return True


def _dismissed(driver: WebDriver, refused: str) -> bool:
    """Close a dialog that says `refused` again; whether there was one."""
    for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
        try:
            if refused.split(":", maxsplit=1)[0] in " ".join(dialog.text.split()):
                dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-footer button").click()
                return True
        except (StaleElementReferenceException, NoSuchElementException):
            return True
    return False


def work(
    driver: WebDriver, wait: WebDriverWait[WebDriver], hub: str, user: str, project: str, paths: str
) -> str:
    """A researcher behind the browser gate. PATHS is DATASET_FILE,NOTEBOOK: the dataset file
    is refused with the gate's message (printed as `refused: <message>`); the notebook (one
    code cell that draws a plot) opens, its cell runs, the plot shows, and it is saved
    (`plotted and saved <name>`)."""
    data_file, notebook = paths.split(",")
    start_lab(driver, wait, hub, user, project)
    driver.get(f"{hub}/user/{user}/{project}/lab/tree/{data_file}")
    dialog = wait.until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Dialog-content"))
    )
    refused = " ".join(dialog.text.split())
    print(f"refused: {refused}")
    dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-footer button").click()
    driver.get(f"{hub}/user/{user}/{project}/lab/tree/{notebook}")
    # A cell run before the notebook's kernel is connected is not run at all: wait until the
    # status bar says the kernel is idle. JupyterLab re-renders the notebook while it loads:
    # find the cell's editor afresh until a click lands.
    wait.until(
        expected_conditions.presence_of_element_located(
            (By.XPATH, "//*[@id='jp-main-statusbar']//span[contains(., '| Idle')]")
        )
    )
    # JupyterLab may restore the refused file's tab from the saved workspace (a race with the
    # layout's save): its refusal shows again and is closed, as a person closes it.
    wait.until(lambda d: not _dismissed(d, refused) and _click(d, ".jp-Cell .cm-content"))
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    wait.until(
        expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-OutputArea-output img")
        )
    )
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    name = notebook.rsplit("/", 1)[-1]
    wait.until(
        lambda d: (
            not d.find_elements(
                By.XPATH,
                f"//li[contains(@class, 'lm-TabBar-tab')][contains(@class, 'jp-mod-dirty')]"
                f"[contains(., '{name}')]",
            )
        )
    )
    time.sleep(1)  # let the plot paint before the screenshot
    return f"plotted and saved {name}"


def review(
    driver: WebDriver, wait: WebDriverWait[WebDriver], hub: str, user: str, export: str, vote: str
) -> str:
    name = export.split("/", 1)[1]
    # The airlock signs people in through the hub (OAuth, no consent page): the first visit
    # goes to the hub's authorize endpoint and comes back to the list.
    driver.get(f"{hub}{AIRLOCK_PAGE}")
    wait.until(expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Export"))
    driver.find_element(By.LINK_TEXT, name).click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "files")))
    rows = driver.find_elements(By.CSS_SELECTOR, "#files tr")[1:]
    lines = []
    for row in rows:
        cells = row.find_elements(By.TAG_NAME, "td")
        path = cells[0].text.split("\n")[0].strip()
        checks = " | ".join(cells[-1].text.split("\n"))
        lines.append(f"checks {path}: {checks}")
    form = driver.find_element(By.ID, "review")
    for select in form.find_elements(By.CSS_SELECTOR, "select[name^='vote:']"):
        Select(select).select_by_value(vote)
    for comment in form.find_elements(By.CSS_SELECTOR, "input[name^='comment:']"):
        comment.send_keys(REVIEW_COMMENT)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The page comes back with the review listed under the reviewer's name, and no form.
    heading = (By.XPATH, f"//section/h3[starts-with(normalize-space(.), '{user}')]")
    wait.until(expected_conditions.presence_of_element_located(heading))
    items = driver.find_element(*heading).find_element(By.XPATH, "following-sibling::ul[1]")
    votes = [
        li.text.split(" — ")[0].replace(": ", "=") for li in items.find_elements(By.TAG_NAME, "li")
    ]
    if driver.find_elements(By.ID, "review"):
        raise RuntimeError("the review form is still offered after the review was submitted")
    # The screenshot shows the review as the page now lists it.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", items)
    time.sleep(1)  # let the page paint before the screenshot
    return "\n".join([*lines, f"reviewed {','.join(votes)}"])


Session = Callable[[WebDriver, "WebDriverWait[WebDriver]", str, str, str, str], str]
SESSIONS: dict[str, Session] = {"work": work, "review": review}


def main(
    session: str, hub: str, user: str, password: str, what: str, detail: str, screenshot: str
) -> int:
    driver = chromium()
    wait = WebDriverWait(driver, 180)
    try:
        sign_in(driver, wait, hub, user, password)
        print(SESSIONS[session](driver, wait, hub, user, what, detail))
        driver.save_screenshot(screenshot)
        return 0
    except TimeoutException:
        driver.save_screenshot(screenshot)
        print(f"timed out at {driver.current_url}: {driver.title}")
        for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog-content"):
            print(f"dialog: {' '.join(dialog.text.split())}")
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:8]))
