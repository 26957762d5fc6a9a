"""The memory browser end to end: a real server process, real headless Chromium (Playwright), real MCP clients.

What a person does on the page must be what MCP clients then see: a memory paused on the page is gone from
``list_memories``, an edit is found by ``search_memories``. Screenshots of every view land in test-output/web/.
The login cookie is checked without a browser too: HttpOnly, SameSite=Strict, only for /api, CSRF-safe.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.browser import UI_TIMEOUT_MS, ConsoleWatch, eventually, launch, shot
from tests.server_process import HttpServer, server_env, structured

pytestmark = pytest.mark.anyio

TOKENS = "alice-token:alice,admin-token"
STATIC = Path(__file__).resolve().parent.parent / "src" / "tablestore_openmemory_mcp" / "web" / "static"
CHINESE = "周末喜欢去西湖边散步"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HttpServer]:
    env = server_env(tmp_path, MCP_AUTH_TOKENS=TOKENS)
    with HttpServer(env, tmp_path, transport="streamable-http") as running:
        yield running


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[HttpServer]:
    with HttpServer(server_env(tmp_path), tmp_path, transport="streamable-http") as running:
        yield running


def mcp(server: HttpServer, client: str, user: str, token: str | None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = create_mcp_http_client(headers=headers)
    return Client(streamable_http_client(f"{server.url}/mcp/{client}/http/{user}", http_client=http))


async def mcp_add(server: HttpServer, client: str, user: str, text: str, token: str | None, **more: Any) -> str:
    async with mcp(server, client, user, token) as session:
        result = structured(await session.call_tool("add_memories", {"text": text, "infer": False, **more}))
    return str(result["events"][0]["id"])


async def mcp_list(server: HttpServer, client: str, user: str, token: str | None) -> list[str]:
    async with mcp(server, client, user, token) as session:
        listed = structured(await session.call_tool("list_memories", {}))
    return sorted(m["memory"] for m in listed["memories"])


async def rows(page: Any) -> list[str]:
    """The memory texts the list shows, top to bottom."""
    return [text.strip() for text in await page.locator("#memory-list tbody td.text").all_inner_texts()]


async def wait_rows(page: Any, wanted: Any, what: str, **asked: str) -> list[str]:
    """Wait until the list shows the answer to ``asked`` (q, weak, client, state, sort, since, until; default "")
    and it holds."""
    expected = {"q": "", "weak": "", "client": "", "state": "", "sort": "", "since": "", "until": "", **asked}

    async def check() -> tuple[list[str]] | None:
        table = page.locator("#memory-list")
        if await table.get_attribute("aria-busy") == "true":
            return None
        for key, value in expected.items():
            if await table.get_attribute(f"data-{key}") != value:
                return None
        shown = await rows(page)
        return (shown,) if wanted(shown) else None  # a tuple: an empty list is a valid answer

    return list((await eventually(check, what))[0])


async def test_browse_search_filter_pause_edit_delete_and_export(server: HttpServer) -> None:
    token = "alice-token"
    tea = await mcp_add(server, "cline", "alice", "Likes green tea", token)
    await mcp_add(server, "cline", "alice", "Writes Go at work", token)
    await mcp_add(server, "cursor", "alice", "Uses tabs for indentation", token)
    await mcp_add(server, "cursor", "alice", CHINESE, token)
    await mcp_add(server, "cline", "bob", "Bob's secret PIN is 7391", "admin-token")

    async with launch() as browser:
        context = await browser.new_context(
            viewport={"width": 1280, "height": 860}, locale="en-US", accept_downloads=True
        )
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        watch = ConsoleWatch(page)
        dialogs: list[str] = []

        async def confirm(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", confirm)

        # sign in: a wrong token is refused on the page, the right one opens alice's memories
        await page.goto(server.url)
        await page.get_by_role("heading", name="Sign in").wait_for()
        token_field = page.get_by_label("Access token")
        assert await token_field.get_attribute("type") == "password"
        await shot(page, "01-login")
        await token_field.fill("not-a-real-token")
        await token_field.press("Enter")  # the keyboard submits the form
        await page.get_by_text("That token is not valid on this server.").wait_for()
        await token_field.fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Memories").wait_for()
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["openmemory_token"]["httpOnly"] and cookies["openmemory_token"]["sameSite"] == "Strict"
        assert await page.evaluate("document.cookie") == "", "the token cookie must be invisible to scripts"

        # the list shows what MCP clients added, across clients, Chinese text intact; never bob's
        listed = await wait_rows(page, lambda shown: len(shown) == 4, "alice's four memories")
        assert set(listed) == {"Likes green tea", "Writes Go at work", "Uses tabs for indentation", CHINESE}
        assert "7391" not in await page.content()
        assert await page.get_by_text("User: alice").is_visible()
        await shot(page, "02-memories")

        # search (debounced: typing sends fewer requests than keystrokes; hybrid: the best hit first)
        searches: list[str] = []
        page.on("request", lambda request: searches.append(request.url) if "q=" in request.url else None)
        await page.get_by_role("searchbox", name="Search").press_sequentially("green tea")
        await wait_rows(page, lambda shown: shown[:1] == ["Likes green tea"], "the search hit first", q="green tea")
        assert 1 <= len(searches) < len("green tea"), searches
        # only matches by default (issue 23: the relevance cutoff); the weaker ones on request, best first
        shown = await wait_rows(page, lambda shown: bool(shown), "the matches", q="green tea")
        assert shown == ["Likes green tea"], shown
        await page.get_by_label("Show weaker matches").check()
        shown = await wait_rows(page, lambda shown: len(shown) == 4, "every memory, by score", q="green tea", weak="1")
        assert shown[0] == "Likes green tea"
        await page.get_by_label("Show weaker matches").uncheck()
        await page.get_by_role("searchbox", name="Search").fill("spreadsheet macros")
        await wait_rows(page, lambda shown: shown == [], "no match", q="spreadsheet macros")
        assert await page.get_by_text("No memory is relevant to this search.", exact=False).is_visible()
        await page.get_by_role("searchbox", name="Search").fill("")
        await wait_rows(page, lambda shown: len(shown) == 4, "the whole list again")

        # filter by client and date, sort
        await page.get_by_label("App", exact=True).select_option("cursor")
        shown = await wait_rows(page, lambda shown: len(shown) == 2, "cursor's two memories", client="cursor")
        assert set(shown) == {"Uses tabs for indentation", CHINESE}
        await page.get_by_label("App", exact=True).select_option("")
        await page.get_by_label("Sort").select_option("memory")
        shown = await wait_rows(page, lambda shown: len(shown) == 4, "sorted by text", sort="memory")
        assert shown[:3] == ["Likes green tea", "Uses tabs for indentation", "Writes Go at work"]
        await page.get_by_label("From").fill("2999-01-01")
        await wait_rows(page, lambda shown: shown == [], "nothing added after 2999", sort="memory", since="2999-01-01")
        assert await page.get_by_text("No memories here yet.").is_visible()
        await page.get_by_role("button", name="Clear filters").click()
        await wait_rows(page, lambda shown: len(shown) == 4, "all memories again")
        # dates are when a memory happened (its event time, else its creation), as over MCP; "To" includes that day
        january = await mcp_add(server, "cline", "alice", "Visited Hangzhou", token, event_time="2026-01-15T09:00:00Z")
        await page.get_by_label("From").fill("2026-01-15")
        await page.get_by_label("To").fill("2026-01-15")
        day = {"since": "2026-01-15", "until": "2026-01-15"}
        assert await wait_rows(page, lambda shown: bool(shown), "that day's memory", **day) == ["Visited Hangzhou"]
        await page.get_by_label("From").fill("")
        await page.get_by_label("To").fill("2026-01-14")
        await wait_rows(page, lambda shown: shown == [], "nothing happened before", until="2026-01-14")
        purged = httpx.request(
            "DELETE",
            f"{server.url}/api/v1/memories",
            params={"purge": "true"},
            json={"memory_ids": [january]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert purged.status_code == 200 and purged.json()["purged"] == [january], purged.text
        await page.get_by_role("button", name="Clear filters").click()
        await wait_rows(page, lambda shown: len(shown) == 4, "the four memories again")

        # pause one: it stays on the page as paused, and MCP no longer lists it
        await page.get_by_label("Select: Likes green tea").check()
        assert await page.get_by_text("1 selected").is_visible()
        await page.locator("[data-bulk=paused]").click()
        await page.locator(f'tr[data-id="{tea}"][data-state="paused"]').wait_for()
        assert await mcp_list(server, "cline", "alice", token) == ["Writes Go at work"]

        # edit one on its own page: MCP search finds the new text; the history shows old -> new with source rest
        await page.get_by_role("link", name="Writes Go at work").click()
        await page.get_by_role("heading", name="Memory", exact=True).wait_for()
        await page.get_by_label("Text").fill("Writes Rust at work")
        await page.get_by_role("button", name="Save").click()
        await page.locator("#history tbody tr", has_text="UPDATE").wait_for()
        update = await page.locator("#history tbody tr", has_text="UPDATE").inner_text()
        assert "Writes Go at work" in update and "Writes Rust at work" in update and "rest" in update
        async with mcp(server, "cline", "alice", token) as session:
            hits = structured(await session.call_tool("search_memories", {"query": "Rust at work"}))["results"]
        assert hits[0]["memory"] == "Writes Rust at work"
        for label in ("Pause", "Archive", "Resume", "Delete"):
            assert await page.get_by_role("button", name=label, exact=True).count() == 1
        await shot(page, "03-memory")

        # delete it there (soft): the page shows it deleted, MCP no longer lists it
        await page.get_by_role("button", name="Delete", exact=True).click()
        await page.locator("#memory-state .state-deleted").wait_for()
        assert dialogs, "delete asks for confirmation"
        assert await mcp_list(server, "cline", "alice", token) == []
        await page.locator("#history tbody tr", has_text="DELETE").wait_for()

        # apps: counts and a pause toggle
        await page.get_by_role("link", name="Apps", exact=True).click()
        await page.locator('tr[data-app="cursor"]').wait_for()
        assert "2" in await page.locator('tr[data-app="cursor"]').inner_text()
        # the deleted memory is not among the state badges beside the live count, but said apart
        assert "+1 deleted" in await page.locator('tr[data-app="cline"]').inner_text()
        await shot(page, "04-apps")
        await page.get_by_role("switch", name="Pause cursor").check()
        await page.get_by_text("cursor is paused.").wait_for()
        async with mcp(server, "cursor", "alice", token) as session:
            paused_add = await session.call_tool("add_memories", {"text": "Should not be stored", "infer": False})
        assert paused_add.is_error
        await page.get_by_role("switch", name="Pause cursor").uncheck()
        await page.get_by_text("cursor is active again.").wait_for()

        # dashboard: totals, the chart, configuration with this server's URL and the user filled in
        await page.get_by_role("link", name="Dashboard", exact=True).click()
        await page.locator("svg.chart rect").first.wait_for()
        assert await page.locator('[data-stat="total"] .value').inner_text() == "3"
        cline = await page.locator("#snippet-cline").inner_text()
        assert json.loads(cline)["mcpServers"]["memory"]["url"] == f"{server.url}/mcp/cline/http/alice"
        await page.get_by_role("tab", name="CherryStudio").click()
        assert await page.locator("#snippet-cherrystudio").inner_text() == f"{server.url}/mcp/cherrystudio/sse/alice"
        await page.get_by_role("tab", name="Claude Desktop").click()
        claude = json.loads(await page.locator("#snippet-claude").inner_text())
        env = claude["mcpServers"]["memory"]["env"]
        assert env.pop("MEMORY_DATA_DIR").endswith("data"), "a stdio client must use the server's store"
        assert env == {"MCP_STDIO_CLIENT_NAME": "claude", "MCP_STDIO_USER_ID": "alice"}
        assert "Each client sees only the memories it added" in await page.locator("#sharing").inner_text()
        await page.get_by_role("tab", name="Claude Desktop").press("ArrowRight")  # tabs work from the keyboard
        assert await page.get_by_role("tab", name="Cursor").get_attribute("aria-selected") == "true"
        await shot(page, "05-dashboard")

        # backup: export downloads a zip (or, until the backup routes exist, says why it could not)
        await page.get_by_role("link", name="Backup", exact=True).click()
        downloads: list[Any] = []
        page.on("download", lambda download: downloads.append(download))
        await page.get_by_role("button", name="Export").click()

        async def exported() -> bool:
            return bool(downloads) or await page.locator("#alert").is_visible()

        await eventually(exported, "the export download or its error")
        if downloads:  # and import it back: nothing new (skip mode)
            saved = Path(await downloads[0].path())
            assert zipfile.is_zipfile(io.BytesIO(saved.read_bytes()))
            await page.get_by_label("Backup file (.zip)").set_input_files(str(saved))
            await page.get_by_role("button", name="Import", exact=True).click()
            await page.locator("#import-result").wait_for()
            assert "Records read" in (await page.locator('#import-result [data-key="read"]').text_content() or "")
        else:
            assert "404" in await page.locator("#alert").inner_text()
            watch.expected.append("Failed to load resource: the server responded with a status of 404")
        await shot(page, "06-backup")

        # Chinese interface, chosen on the page (and kept)
        await page.get_by_label("Language").select_option("zh")
        await page.get_by_role("link", name="记忆", exact=True).click()
        await page.get_by_role("heading", name="记忆", exact=True).wait_for()
        await wait_rows(page, lambda shown: CHINESE in shown, "the list in Chinese")
        await shot(page, "07-memories-zh")

        # phone width: still readable (no horizontal scrolling)
        await page.set_viewport_size({"width": 390, "height": 844})
        await wait_rows(page, lambda shown: len(shown) == 3, "the list at phone width")
        await shot(page, "08-memories-phone")
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        await page.get_by_role("link", name="Likes green tea").click()
        await page.locator("#history").wait_for()
        await shot(page, "09-memory-phone")
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")

        assert watch.errors == [], watch.errors
        await context.close()


async def test_an_unbound_token_chooses_the_user_and_sign_out_forgets_it(server: HttpServer) -> None:
    await mcp_add(server, "cline", "alice", "Alice likes jasmine tea", "alice-token")
    await mcp_add(server, "cline", "bob", "Bob likes coffee", "admin-token")
    async with launch() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        watch = ConsoleWatch(page)
        await page.goto(server.url)
        await page.get_by_label("Access token").fill("admin-token")
        await page.get_by_label("Access token").press("Enter")
        await page.get_by_label("User name").fill("bob")
        await page.get_by_label("User name").press("Enter")
        assert await wait_rows(page, lambda shown: bool(shown), "bob's memories") == ["Bob likes coffee"]
        await page.get_by_role("button", name="Switch user").click()
        await page.get_by_label("User name").fill("alice")
        await page.get_by_role("button", name="Open").click()
        assert await wait_rows(page, lambda shown: bool(shown), "alice's memories") == ["Alice likes jasmine tea"]

        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_role("heading", name="Sign in").wait_for()
        after = await context.request.get(f"{server.url}/api/v1/memories?user_id=alice")
        assert after.status == 401, "signing out must forget the token"
        assert watch.errors == [], watch.errors
        await context.close()


async def test_on_loopback_without_tokens_the_page_opens_for_a_user_name(open_server: HttpServer) -> None:
    server = open_server
    await mcp_add(server, "cline", "bob", "Bob drinks oolong tea", None)
    async with launch() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
        page = await context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        watch = ConsoleWatch(page)
        await page.goto(server.url)
        # the browser's language picks Chinese; no token is asked for, only whose memories
        user = page.get_by_label("用户名")
        await user.fill("bob")
        await user.press("Enter")
        await wait_rows(page, lambda shown: shown == ["Bob drinks oolong tea"], "bob's memory")

        # create a memory on the page: MCP clients of bob see it
        await page.get_by_text("新建记忆").click()
        await page.get_by_label("内容").fill("喜欢喝乌龙茶")
        await page.get_by_label("客户端名").fill("cline")
        await page.get_by_role("button", name="添加").click()
        await wait_rows(page, lambda shown: "喜欢喝乌龙茶" in shown, "the new memory in the list")
        assert await mcp_list(server, "cline", "bob", None) == ["Bob drinks oolong tea", "喜欢喝乌龙茶"]
        await shot(page, "10-open-zh")

        # the dashboard's configuration carries no token header when the server needs none
        await page.get_by_role("link", name="概览", exact=True).click()
        http = json.loads(await page.locator("#snippet-http").inner_text())
        assert http["mcpServers"]["memory"] == {
            "type": "streamableHttp",
            "url": f"{server.url}/mcp/mcp-client/http/bob",
        }
        assert watch.errors == [], watch.errors
        await context.close()


# --- the login cookie, without a browser --------------------------------------------------------------------


@contextmanager
def login(server: HttpServer, token: str) -> Iterator[httpx.Client]:
    """An HTTP client holding the login cookie (and nothing else: no Authorization header)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/auth/login", json={"token": token}, headers={"X-Requested-With": "test"})
        assert response.status_code == 200, response.text
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        yield client


async def test_login_cookie_is_api_only_csrf_safe_and_keeps_the_binding(server: HttpServer) -> None:
    await mcp_add(server, "cline", "alice", "Alice likes jasmine tea", "alice-token")
    await mcp_add(server, "cline", "bob", "Bob likes coffee", "admin-token")
    base = server.url
    # the page and its login load without a token; the API does not
    assert httpx.get(base, timeout=30).status_code == 200
    assert httpx.get(f"{base}/static/app.js", timeout=30).status_code == 200
    assert httpx.get(f"{base}/api/v1/memories", timeout=30).status_code == 401
    session = httpx.get(f"{base}/auth/session", timeout=30).json()
    assert session["auth_required"] and not session["authenticated"]
    # login needs the page's header (a cross-site form cannot send it) and a known token
    no_header = httpx.post(f"{base}/auth/login", json={"token": "alice-token"}, timeout=30)
    assert no_header.status_code == 403 and "set-cookie" not in no_header.headers
    bad = httpx.post(f"{base}/auth/login", json={"token": "wrong-token"}, headers={"X-Requested-With": "t"}, timeout=30)
    assert bad.status_code == 401

    with login(server, "alice-token") as alice:
        assert alice.get("/auth/session").json() == {
            "auth_required": True,
            "authenticated": True,
            "user": "alice",
            "version": session["version"],
        }
        page = alice.get("/api/v1/memories").json()  # the bound user needs no user_id
        assert [m["memory"] for m in page["items"]] == ["Alice likes jasmine tea"]
        assert alice.get("/api/v1/memories", params={"user_id": "bob"}).status_code == 403
        memory_id = page["items"][0]["id"]
        change = {"user_id": "alice", "memory_ids": [memory_id], "state": "paused"}
        refused = alice.post("/api/v1/memories/state", json=change)
        assert refused.status_code == 403 and refused.json()["error"] == "csrf"
        assert alice.get(f"/api/v1/memories/{memory_id}").json()["state"] == "active"
        done = alice.post("/api/v1/memories/state", json=change, headers={"X-Requested-With": "openmemory-web"})
        assert done.json()["changed"] == [memory_id]
        # the cookie is no bearer token for MCP routes
        mcp_call = alice.post("/mcp/cline/http/alice", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert mcp_call.status_code == 401
        # another site's page cannot use it
        foreign = alice.get("/api/v1/memories", headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        out = alice.post("/auth/logout", headers={"X-Requested-With": "t"})
        assert out.status_code == 200 and re.search(r"openmemory_token=\"?\"?;", out.headers["set-cookie"])

    with login(server, "admin-token") as admin:  # an unbound token chooses the user
        assert admin.get("/auth/session").json()["user"] is None
        bob = admin.get("/api/v1/memories", params={"user_id": "bob"}).json()
        assert [m["memory"] for m in bob["items"]] == ["Bob likes coffee"]


# --- the static files ----------------------------------------------------------------------------------------


def test_every_text_the_page_uses_exists_in_english_and_chinese() -> None:
    source = (STATIC / "i18n.js").read_text(encoding="utf-8")
    strings = json.loads(source[source.index("window.I18N =") + len("window.I18N =") :].strip().rstrip(";"))
    used = set(re.findall(r'\bt\("([a-zA-Z]+\.?[a-zA-Z]+)"', (STATIC / "app.js").read_text(encoding="utf-8")))
    used |= set(re.findall(r'data-i18n="([a-zA-Z.]+)"', (STATIC / "index.html").read_text(encoding="utf-8")))
    used |= {f"state.{s}" for s in ("active", "paused", "archived", "deleted")}
    used |= {f"stat.{s}" for s in ("total", "active", "paused", "archived", "deleted", "apps")}
    assert used, "no text keys found"
    for language in ("en", "zh"):
        missing = sorted(used - set(strings[language]))
        assert not missing, f"{language} lacks {missing}"
    assert set(strings["en"]) == set(strings["zh"])


def test_the_page_uses_nothing_from_outside_the_server() -> None:
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f"{path.name} loads something from elsewhere"
        assert "innerHTML" not in text, f"{path.name}: data goes in with textContent only"
