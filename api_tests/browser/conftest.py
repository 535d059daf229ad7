"""Browser tests of the pages (SPEC §10): Playwright driving Debian's Chromium against a real uvicorn.

The server is `api_tests/realserver.py`'s (ESCROW_ENV=test; SQLite, or its own fresh PostgreSQL database when
ESCROW_TEST_DATABASE_URL is set). Every page visit goes through `Visit`: it measures the first load's HTML, CSS
and JavaScript, runs axe-core (vendored from npm, `axe.min.js`, MPL-2.0) and collects console errors. A failing
test keeps a screenshot of each open page in a temporary folder named in the failure.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import httpx
import pytest

from api_tests.conftest import OPERATOR_TOKEN
from api_tests.factories import OP
from api_tests.realserver import RealServer, fresh_database

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("ESCROW_CHROMIUM", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desk": {"width": 1366, "height": 900}}
PAGE_BUDGET = 150 * 1024  # bytes of HTML + CSS + JS on a page's first load
AXE_SOURCE = (HERE / "axe.min.js").read_text(encoding="utf-8")
SHOTS = Path(os.environ.get("ESCROW_KEEP_SHOTS") or tempfile.mkdtemp(prefix="escrow-pages-shots-"))
# Where the README's screenshots are written (`ESCROW_SCREENSHOT_DIR=docs/screenshots`); unset: the temp folder.
README_SHOTS = Path(os.environ["ESCROW_SCREENSHOT_DIR"]) if os.environ.get("ESCROW_SCREENSHOT_DIR") else SHOTS


async def _server(tmp: str, name: str) -> RealServer:
    db = await fresh_database("escrow_pages")
    server = RealServer(
        Path(tmp),
        db,
        name=name,
        ESCROW_CHECKPOINT_INTERVAL_SECONDS="0.5",
        ESCROW_SWEEP_INTERVAL_SECONDS="1",
        ESCROW_OPERATOR_TOKEN=OPERATOR_TOKEN,
    )  # the factories' operator
    server.migrate()
    await server.start()
    return server


@pytest.fixture(scope="module")
async def server():
    with tempfile.TemporaryDirectory(prefix="escrow-pages-") as tmp:
        s = await _server(tmp, "pages")
        try:
            yield s
        finally:
            s.stop()
            await s.db.drop()


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def api(server):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as c:
        yield c


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request):
    return request.param


WEIGHTS: dict[str, int] = {}  # the heaviest first load seen per page, for the run's summary line


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    if WEIGHTS:
        worst = max(WEIGHTS.values())
        terminalreporter.write_line(
            f"pages: first loads of HTML+CSS+JS, heaviest {worst / 1024:.1f} KB of "
            f"{PAGE_BUDGET // 1024} KB: " + ", ".join(f"{k} {v / 1024:.1f} KB" for k, v in sorted(WEIGHTS.items()))
        )


WEIGHT_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  let total = nav ? nav.decodedBodySize : 0;
  for (const r of performance.getEntriesByType('resource')) {
    if (r.initiatorType === 'script' || r.initiatorType === 'link' || /\\.(js|css)(\\?|$)/.test(r.name)) {
      total += r.decodedBodySize;
    }
  }
  return total;
}"""


class Visit:
    """Pages of one browser context; each visit checked for weight, accessibility and console errors."""

    def __init__(self, context, base: str, viewport: str, test_name: str):
        self.context, self.base, self.viewport, self.test_name = context, base, viewport, test_name
        self.errors: list[str] = []
        self.pages = []
        self.weights: dict[str, int] = {}

    async def new_page(self):
        page = await self.context.new_page()
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        self.pages.append(page)
        return page

    async def goto(self, page, path: str, axe: bool = True):
        """Open `path` as a first load (nothing cached) and check its weight and accessibility."""
        await page.goto(self.base + path, wait_until="load")
        # Sizes from the browser's own Resource Timing (every asset is same-origin, so sizes are exposed):
        # the document plus every script and stylesheet it loaded, decoded.
        total = await page.evaluate(WEIGHT_JS)
        assert total > 0, f"{path}: nothing was weighed"
        self.weights[path] = total
        WEIGHTS[f"{path.split('?')[0]} ({self.viewport})"] = max(
            total, WEIGHTS.get(f"{path.split('?')[0]} ({self.viewport})", 0)
        )
        assert total < PAGE_BUDGET, f"{path}: first load {total} bytes of HTML+CSS+JS (budget {PAGE_BUDGET})"
        if axe:
            await check_axe(page, path)
        return page

    async def keep_shots(self) -> Path:
        folder = SHOTS / f"{self.test_name}-{self.viewport}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(self.pages):
            try:
                await page.screenshot(path=str(folder / f"page{i}.png"), full_page=True)
            except Exception:
                pass
        return folder


async def check_axe(page, what: str) -> None:
    # Evaluated through the DevTools protocol rather than added as a <script>: the page's CSP (rightly) refuses
    # any script it did not serve itself, and the test must not weaken it.
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE_SOURCE + "\n;true")
    result = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"axe on {what}: " + "; ".join(bad)


@pytest.fixture
async def visit(browser, server, viewport, request):
    context = await browser.new_context(viewport=VIEWPORTS[viewport], locale="zh-CN")
    v = Visit(context, f"http://127.0.0.1:{server.port}", viewport, request.node.name.split("[")[0])
    try:
        yield v
    finally:
        if getattr(request.node, "_failed", False):
            folder = await v.keep_shots()
            print(f"\nscreenshots kept in {folder}\nconsole errors: {v.errors}")
        elif os.environ.get("ESCROW_KEEP_SHOTS"):  # to look at every page as people see it
            await v.keep_shots()
        await context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item._failed = True


# ---- setup over HTTP, as SPEC §8 says a consumer registers --------------------------------------------


def random_phone() -> str:
    return "13" + "".join(random.choice("0123456789") for _ in range(9))


async def code_for(api: httpx.AsyncClient, phone: str) -> str:
    r = await api.get("/v1/test/sms", params={"phone": phone}, headers=OP)
    assert r.status_code == 200, r.text
    return r.json()["items"][-1]["code"]


async def register(api: httpx.AsyncClient, name: str = "Li Lei 李雷") -> dict:
    phone = random_phone()
    r = await api.post("/v1/consumers/verifications", json={"phone": phone})
    assert r.status_code == 202, r.text
    vid = r.json()["verification_id"]
    r = await api.post(
        "/v1/consumers", json={"name": name, "phone": phone, "verification_id": vid, "code": await code_for(api, phone)}
    )
    assert r.status_code == 201, r.text
    c = r.json()
    c["phone"] = phone
    c["headers"] = {"Authorization": f"Bearer {c['token']}"}
    return c
