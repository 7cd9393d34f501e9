"""One live server running real jobs, and one headless Chromium (Debian's, driven through
its chromedriver by Selenium) for the whole module: both are slow to start."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import TEST_JWT_KEY
from tests.fake_anthropic import FakeAnthropic
from tests.fake_anthropic.fixtures import fake_anthropic
from tests.jobs.conftest import agent_env
from tests.support.api import Api, home_of, make_git_repo
from tests.support.mounts import unmount_beneath
from tests.support.server import LiveServer, wait_for
from tests.support.users import OsUser, UserFactory

__all__ = ["fake_anthropic"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60.0
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@dataclass
class WebWorld:
    server: LiveServer
    users: UserFactory
    alice: Api  # a user with a ready repository
    admin: OsUser  # a member of ADMIN_GROUP


@pytest.fixture(scope="module")
def web_world(fake_anthropic: FakeAnthropic) -> Iterator[WebWorld]:
    users = UserFactory()
    folder = Path(tempfile.mkdtemp(prefix="cbs-web-", dir="/var/tmp"))
    folder.chmod(0o755)
    data_dir = folder / "data"
    data_dir.mkdir()
    admins = users.group()
    env = {
        "COW_STRATEGY": "copy",
        "JWT_KEY": TEST_JWT_KEY,
        "ADMIN_GROUP": admins,
        **agent_env(fake_anthropic),
    }
    server = LiveServer(data_dir, env)
    alice: Api | None = None
    try:
        server.start()
        alice = Api(server, users.create())
        source = make_git_repo(home_of(alice.user), alice.user)
        alice.ready_repository("shop", source)
        yield WebWorld(server, users, alice, users.create(groups=(admins,)))
    finally:
        if alice is not None:
            alice.close()
        server.stop()
        users.cleanup()
        unmount_beneath(folder)
        shutil.rmtree(folder, ignore_errors=True)


class Browser:
    """Chromium with its console and network logs, and what a user does with a page."""

    def __init__(self, base: str, downloads: Path) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless=new",
            "--no-sandbox",  # as root
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        self.base = base
        self.downloads = downloads
        self.user: OsUser | None = None

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, text: str = "", deadline: float = WAIT) -> WebElement:
        def shown() -> WebElement | None:
            try:
                for element in self.all(css):
                    if text.lower() in element.text.lower():
                        return element
            except StaleElementReferenceException:
                pass  # swapped by a live update meanwhile: look again
            return None

        found: WebElement = wait_for(shown, deadline, f"{css} with {text!r} on {self.url}", 0.1)
        return found

    def click(self, css: str) -> None:
        """Clicks `css`, again if a live update swapped it out under the click."""

        def clicked() -> bool:
            try:
                self.find(css).click()
            except StaleElementReferenceException:
                return False
            return True

        wait_for(clicked, WAIT, f"a click on {css}", 0.1)

    @property
    def url(self) -> str:
        return str(self.driver.current_url)

    @property
    def text(self) -> str:
        return str(self.find("body").text)

    def log_in(self, user: OsUser, password: str | None = None) -> None:
        self.open("/ui/login")
        self.find("#username").send_keys(user.name)
        self.find("#password").send_keys(user.password if password is None else password)
        self.find("#login-submit").click()
        self.user = user

    def as_user(self, user: OsUser) -> None:
        """Logged in as `user`, whatever the tests before left."""
        if self.user is user and self.driver.get_cookie("cbs_session") is not None:
            return
        self.driver.delete_all_cookies()
        self.log_in(user)
        self.wait_for("form.logout", user.name)

    def log_out(self) -> None:
        self.find("form.logout button").click()
        self.wait_for("#login-submit")

    def screenshot(self, name: str) -> None:
        """Into docs/screenshots when SCREENSHOTS=1 (how the README's pictures are made)."""
        if os.environ.get("SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(exist_ok=True)
            self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))

    def logs(self) -> tuple[list[dict[str, Any]], list[str]]:
        """What the browser logged since the last call: console entries, and the URL of
        every request its pages made."""
        console = self.driver.get_log("browser")
        requested = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                requested.append(message["params"]["request"]["url"])
        return console, requested

    def alert_text(self) -> str | None:
        try:
            return str(self.driver.switch_to.alert.text)
        except NoAlertPresentException:
            return None

    def close(self) -> None:
        self.driver.quit()


def hosts(urls: list[str]) -> set[str]:
    """The hosts of the URLs that have one (data: URLs of the browser's own have none)."""
    return {urlsplit(url).hostname or "" for url in urls if not url.startswith("data:")}


@pytest.fixture(scope="module")
def browser(web_world: WebWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium is missing: scripts/bootstrap-system.sh test installs it")
    opened = Browser(web_world.server.url, tmp_path_factory.mktemp("downloads"))
    try:
        yield opened
    finally:
        opened.close()
