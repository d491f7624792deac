"""``imagine-bot playground`` driven in real headless Chromium, as a newcomer would use it.

The real CLI starts the real bot (tiny model) against the built-in Discord stand-in; the page
is driven with Playwright on Debian's ``chromium``. Screenshots of each state are saved under
``test-output/playground/`` (or ``$IMAGINE_TEST_OUTPUT/playground``) for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)"
)

OUTPUT = Path(os.environ.get("IMAGINE_TEST_OUTPUT", "test-output")) / "playground"
WAIT_MS = 120_000  # generous: a loaded 2-core machine; nothing here asserts speed


class Playground:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log, self.url = proc, log, ""

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def wait_until_ready(self, page) -> None:
        """The page says the bot is online; a bot that died at start fails with its own log."""
        deadline = time.monotonic() + WAIT_MS / 1000
        ready = page.locator("[data-testid=status][data-ready=true]")
        while not ready.count():
            assert self.proc.poll() is None, f"the playground exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the bot never came online:\n{self.output()}"
            page.wait_for_timeout(200)


@pytest.fixture
def playground(tmp_path: Path) -> Iterator[Playground]:
    """The real ``imagine-bot playground --model tiny``, with the URL it printed."""
    env = {
        **os.environ,
        "IMAGINE_MODEL__DEVICE": "cpu",
        "IMAGINE_MODEL__DEFAULT_STEPS": "2",
        "IMAGINE_OPS__MIN_FREE_DISK_MB": "10",
        "IMAGINE_DISCORD__PROGRESS_INTERVAL_S": "0.5",
    }
    env.pop("IMAGINE_CONFIG", None)
    env.pop("DISCORD_TOKEN", None)
    cmd = [
        sys.executable,
        "-m",
        "bot.cli",
        "playground",
        "--model",
        "tiny",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    log = (tmp_path / "playground.log").open("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    running = Playground(proc, tmp_path / "playground.log")
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            log.seek(0)
            found = re.search(r"open (http://127\.0\.0\.1:\d+/)", log.read())
            url = found.group(1) if found else None
        log.seek(0)
        assert url, f"the playground printed no URL:\n{log.read()[-3000:]}"
        running.url = url
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def shot(page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def act_as(page, member: str) -> None:
    page.select_option("[data-testid=member]", label=member)


def result_with(page, label: str):
    """The newest message with a button labelled ``label``."""
    return page.locator(
        "[data-testid=message]", has=page.locator(f"button[data-label='{label}']")
    ).last


def test_a_newcomer_uses_the_whole_bot_in_a_browser(playground: Playground) -> None:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(WAIT_MS)
        page.goto(playground.url)
        playground.wait_until_ready(page)
        shot(page, "01-ready")

        # Alice imagines: the reply is deferred, shows progress, then the grid with its buttons.
        act_as(page, "alice")
        page.fill("[data-testid=prompt]", "a red fox in the snow --seed 7")
        page.click("[data-testid=send]")
        page.wait_for_selector("[data-testid=message] .used:has-text('alice used /imagine')")
        shot(page, "02-submitted")
        grid = result_with(page, "U1")
        grid.locator("[data-testid=attachment]").wait_for()
        assert "a red fox in the snow" in grid.inner_text()
        for label in ("U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"):
            assert grid.locator(f"button[data-label='{label}']").count() == 1
        shot(page, "03-four-images")

        # Bob presses Alice's U1 and V2: both results arrive, each with its own buttons.
        act_as(page, "bob")
        grid.locator("button[data-label='U1']").click()
        grid.locator("button[data-label='V2']").click()
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-testid=message]')]
                .filter(m => m.querySelector('[data-testid=attachment]')).length >= 3"""
        )
        page.wait_for_function(
            """() => { const ms = [...document.querySelectorAll('[data-testid=message]')];
                return ms.some(m => /upscal/i.test(m.innerText) && m.querySelector('img'))
                    && ms.some(m => /variation/i.test(m.innerText) && m.querySelector('img')); }"""
        )
        shot(page, "04-upscale-and-variation")

        # The moderator bans a word; Alice's prompt with it is refused.
        act_as(page, "mod (moderator)")
        page.wait_for_selector("[data-testid=mod-panel]:not([hidden])")
        page.fill("[data-testid=ban-word]", "pineapple")
        page.click("[data-testid=ban]")
        page.wait_for_selector("[data-testid=message]:has-text('pineapple')")
        shot(page, "05-word-banned")
        act_as(page, "alice")
        images_before = page.locator("[data-testid=attachment]").count()
        page.fill("[data-testid=prompt]", "a pineapple on a beach")
        page.click("[data-testid=send]")
        refusal = page.locator("[data-testid=message]", has_text="Only you can see this").filter(
            has_text=re.compile("block|banned|not allowed", re.I)
        )
        refusal.last.wait_for()
        assert page.locator("[data-testid=attachment]").count() == images_before
        shot(page, "06-prompt-refused")

        # Dropping a result image on the provenance box finds its job.
        act_as(page, "mod (moderator)")
        job = re.search(r"job `?(\w+)`?", grid.inner_text()).group(1)
        page.evaluate(
            """(src) => { const dt = new DataTransfer(); dt.setData('text/uri-list', src);
                const box = document.querySelector('[data-testid=provenance-drop]');
                box.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }""",
            grid.locator("[data-testid=attachment]").get_attribute("src"),
        )
        page.locator("[data-testid=message]", has_text=job).filter(
            has_text="Only you can see this"
        ).last.wait_for()
        shot(page, "07-provenance")

        # The page works at a phone's width too.
        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("[data-testid=prompt]").wait_for()
        shot(page, "08-phone")
        violations = page.locator("[data-testid=violations] li").all_inner_texts()
        assert violations == ["no rule broken so far"], violations
        browser.close()
