"""A small driver for the browser system tests: a headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium, waits on what a page shows, and screenshots kept as test
artifacts under ``$TRAINING_RUNS_TEST_ARTIFACTS/browser/`` (default ``<repo>/test-artifacts/browser/``)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1400, 1000

T = TypeVar("T")


def artifacts_folder() -> Path:
    """Where the screenshots go (made when missing)."""
    root = Path(os.environ.get("TRAINING_RUNS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def missing_browser() -> str | None:
    """Why no browser can start here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian package {package}; scripts/components.sh installs it)"
    return None


def start_chromium() -> WebDriver:
    """A headless Chromium, loopback only, with a fixed window size."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}",
                     "--disable-gpu", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def xpath_literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal (which has no escapes)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def text_xpath(text: str, tag: str | None = None) -> str:
    """XPath of the ``tag`` elements whose whole text is ``text`` (spaces normalised); without a
    tag, of the innermost elements whose text it is."""
    literal = xpath_literal(text)
    if tag:
        return f"//{tag}[normalize-space(.)={literal}]"
    return f"//*[normalize-space(.)={literal} and not(.//*[normalize-space(.)={literal}])]"


class Browser:
    """The page a test drives, its waits and its numbered screenshots (``<test>-<NN>-<step>.png``)."""

    def __init__(self, driver: WebDriver, folder: Path, test: str) -> None:
        self.driver = driver
        self.folder = folder
        self.test = test
        self.shots: list[Path] = []
        for stale in folder.glob(f"{test}-*.png"):  # an earlier run's pictures, a failure's included
            stale.unlink()

    def shot(self, step: str) -> Path:
        """Save a screenshot of the window as ``<test>-<NN>-<step>.png``."""
        name = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        path = self.folder / f"{self.test}-{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path)
        return path

    def tall(self, height: int = 3000) -> None:
        """Make the window tall enough for a whole form in one screenshot."""
        self.driver.set_window_size(WIDTH, height)

    def normal(self) -> None:
        self.driver.set_window_size(WIDTH, HEIGHT)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[WebDriver], T], what: str | Callable[[], str], timeout: float = 30) -> T:
        """Wait until ``condition`` gives a true value (stale elements are retried); fail naming
        ``what`` (a function: asked at the timeout, to say what the page showed then)."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except TimeoutException:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {said} (page {self.driver.current_url})") \
                from None

    def visible(self, xpath: str, what: str, timeout: float = 30) -> WebElement:
        """The first displayed element matching ``xpath``, once there is one."""

        def found(driver: WebDriver) -> WebElement | bool:
            return next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), False)

        element = self.wait(found, what, timeout)
        assert isinstance(element, WebElement)
        return element

    def all_visible(self, xpath: str) -> list[WebElement]:
        """Every displayed element matching ``xpath``, now."""
        return [e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()]

    def text(self, text: str, what: str | None = None, timeout: float = 30) -> WebElement:
        """The innermost displayed element whose text is ``text`` (spaces normalised)."""
        return self.visible(text_xpath(text), what or f"the text {text!r}", timeout)

    def page_text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def wait_for_page_text(self, text: str, timeout: float = 30) -> None:
        self.wait(lambda _driver: text in self.page_text(), f"{text!r} on the page", timeout)

    def click(self, element: WebElement) -> None:
        """Scroll ``element`` into view and click it."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def click_on(self, xpath: str, what: str, timeout: float = 30) -> None:
        """Click the first displayed element matching ``xpath`` once there is one; found again if
        the page re-renders it between finding and clicking (a stale element)."""

        def clicked(driver: WebDriver) -> bool:
            element = next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), None)
            if element is None:
                return False
            self.click(element)
            return True

        self.wait(clicked, what, timeout)

    def script(self, source: str, *arguments: Any) -> Any:
        return self.driver.execute_script(source, *arguments)
