"""The dashboard in a real browser: Debian's headless Chromium against the real server,
which runs real jobs (the Claude Code CLI against the fake model)."""

from __future__ import annotations

import html
import json
import re
import secrets
import shutil
import tempfile
from contextlib import closing
from pathlib import Path

import httpx

from claude_batch_server.jobs.events import EventStore
from claude_batch_server.jobs.transcript import Event
from claude_batch_server.store.db import Database
from claude_batch_server.web.pages.jobs import PAGE_SIZE, TRANSCRIPT_PAGE
from tests.fake_anthropic import FakeAnthropic, bash, marker, text, write_file
from tests.fake_anthropic.images import tiny_png
from tests.support.api import Api, home_of, make_git_repo
from tests.support.local_client import LocalClient, Request
from tests.support.server import wait_for
from tests.support.users import OsUser
from tests.web.conftest import WAIT, Browser, WebWorld, hosts

XSS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=alert('xss-img')>",
    '"><svg onload=alert("xss-svg")>',
    "<a href=\"javascript:alert('xss-link')\">click</a>",
    "<iframe src=\"data:text/html,<script>alert('xss-frame')</script>\"></iframe>",
    '<img src="http://192.0.2.1/beacon.png">',
    "{{ 7 * 7 }} {% raw %}",
]
HOSTILE_NAME = "<img src=x onerror=alert('xss-name')>.html"
NOTES = "hello from the agent\nsecond line\n"
LONG = 10_000  # events of a long transcript
PER_ADDRESS = 20  # failed logins that refuse an address (README, "Logging in")


def test_a_wrong_password_shows_an_error(browser: Browser, web_world: WebWorld) -> None:
    browser.log_in(web_world.alice.user, password="not-the-password")
    error = browser.wait_for("#login-error")
    assert "invalid username or password" in error.text
    assert browser.url.startswith(f"{web_world.server.url}/ui/login")
    assert browser.driver.get_cookie("cbs_session") is None


def test_log_in_and_the_list_shows_a_job_run_by_the_cli(
    browser: Browser, web_world: WebWorld, fake_anthropic: FakeAnthropic
) -> None:
    alice = web_world.alice
    job = alice.run(alice.repo, f"Say hello\nand nothing more {marker('hello')}")
    done = alice.wait_ended(job["jobId"])
    assert done["status"] == "completed"

    browser.log_in(alice.user)
    row = browser.wait_for(f"tr[data-job='{job['jobId']}']", "completed")
    assert "shop" in row.text and "Say hello" in row.text and "nothing more" not in row.text
    assert f"${done['costUsd']:.4f}" in row.text
    cookie = browser.driver.get_cookie("cbs_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    browser.screenshot("jobs")


def test_a_new_job_streams_its_transcript_while_it_runs(
    browser: Browser, web_world: WebWorld, fake_anthropic: FakeAnthropic
) -> None:
    browser.as_user(web_world.alice.user)
    gate = Path(tempfile.mkdtemp(prefix="cbs-gate-", dir="/var/tmp")) / "open"
    gate.parent.chmod(0o755)
    script = fake_anthropic.add_script(
        "web-gate",
        [
            write_file("notes.txt", NOTES),
            bash(f"while [ ! -e {gate} ]; do sleep 0.2; done; echo gate-passed"),
            text("All done behind the gate."),
        ],
    )
    picture = gate.parent / "mockup.png"
    picture.write_bytes(tiny_png(2, 2, (200, 0, 0)))
    browser.open("/ui/jobs/new")
    browser.find("#prompt").send_keys(f"Write notes, then wait {script}")
    browser.find("#images").send_keys(str(picture))
    browser.screenshot("new-job")
    browser.find("#submit-job").click()
    browser.wait_for("#job-header")
    browser.driver.execute_script("window.sameDocument = true")

    waiting = browser.wait_for("details.tool", "while [ ! -e")
    job_id = browser.url.rsplit("/", 1)[-1]
    assert web_world.alice.job(job_id)["images"] == ["mockup.png"]
    assert browser.find("#job-status").text.lower() == "running"
    assert "All done behind the gate." not in browser.text
    written = browser.wait_for("details.tool summary", "notes.txt")
    assert written.text == "Write: notes.txt"  # relative to the workspace
    gate.touch()

    browser.wait_for(".row.result", "turns")
    assert "All done behind the gate." in browser.text
    browser.wait_for("#job-status", "completed")
    assert browser.driver.execute_script("return window.sameDocument") is True  # no reload
    waiting.click()  # the tool's result, folded under its call
    assert "gate-passed" in waiting.text
    browser.screenshot("job")
    shutil.rmtree(gate.parent)


def test_cancel_a_running_job(
    browser: Browser, web_world: WebWorld, fake_anthropic: FakeAnthropic
) -> None:
    browser.as_user(web_world.alice.user)
    alice = web_world.alice
    script = fake_anthropic.add_script("web-sleeper", [bash("sleep 1000"), text("Slept.")])
    job = alice.run(alice.repo, f"Sleep {script}")
    browser.open(f"/ui/jobs/{job['jobId']}")
    browser.wait_for("details.tool", "sleep 1000")

    browser.click("#cancel")

    browser.wait_for("#job-status", "cancelled")
    assert alice.job(job["jobId"])["status"] == "cancelled"


def test_a_follow_up_then_delete(browser: Browser, web_world: WebWorld) -> None:
    browser.as_user(web_world.alice.user)
    alice = web_world.alice
    job = alice.run(alice.repo, f"Say hello {marker('hello')}")
    alice.wait_ended(job["jobId"])
    browser.open(f"/ui/jobs/{job['jobId']}")
    browser.find("#follow-up").send_keys("And once more")
    browser.click("#resume")

    browser.wait_for(".row.run", "run 2 started (a follow-up)")
    browser.wait_for("#job-status", "completed")
    assert alice.job(job["jobId"])["numTurns"] == 2

    browser.click("#delete")
    browser.driver.switch_to.alert.accept()  # the page asks first
    browser.wait_for("h1", "My jobs")
    assert alice.http.get(f"/jobs/{job['jobId']}").status_code == 404


def _hostile_job(web_world: WebWorld, fake_anthropic: FakeAnthropic) -> str:
    alice = web_world.alice
    corpus = "\n".join(XSS)
    script = fake_anthropic.add_script(
        "web-xss",
        [
            write_file(HOSTILE_NAME, corpus),
            bash("sed -i 's/^# hello$/# hello, world/' README.md"),
            bash(f"printf '%s\\n' {' '.join(repr(x) for x in XSS)}; exit 3"),
            text(corpus),
        ],
    )
    job = alice.run(alice.repo, f"{XSS[1]} {script}")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    return str(job["jobId"])


def test_hostile_output_names_and_contents_stay_inert(
    browser: Browser, web_world: WebWorld, fake_anthropic: FakeAnthropic
) -> None:
    browser.as_user(web_world.alice.user)
    job_id = _hostile_job(web_world, fake_anthropic)
    browser.logs()
    pages = [
        f"/ui/jobs/{job_id}",
        f"/ui/jobs/{job_id}/files",
        f"/ui/jobs/{job_id}/files/view?path={httpx.QueryParams({'p': HOSTILE_NAME})['p']}",
        f"/ui/jobs/{job_id}/diff",
        "/ui/",
    ]
    for path in pages:
        browser.open(path)
        browser.wait_for("footer")
        assert browser.alert_text() is None, path
        assert browser.all("main script, main img, main svg, main iframe") == [], path
        assert [a for a in browser.all("main a") if "javascript" in a.get_attribute("href")] == []
    browser.open(f"/ui/jobs/{job_id}")
    browser.wait_for(".row.text", XSS[0])  # the agent's text, shown as text
    browser.wait_for("details.tool.failed", "printf")  # the failed call, marked
    browser.open(f"/ui/jobs/{job_id}/files")
    browser.wait_for("a.file", HOSTILE_NAME)
    console, requested = browser.logs()
    assert console == []
    assert hosts(requested) == {"127.0.0.1"}


def test_the_diff_shows_the_change_and_files_download(
    browser: Browser, web_world: WebWorld
) -> None:
    browser.as_user(web_world.alice.user)
    alice = web_world.alice
    job_id = alice.jobs_in("completed")[0]["jobId"]  # the hostile job, newest
    browser.open(f"/ui/jobs/{job_id}/diff")
    summary = browser.wait_for("#diff-summary")
    assert "2 files changed" in summary.text
    added = [line.text for line in browser.all("pre.diff .add")]
    removed = [line.text for line in browser.all("pre.diff .del")]
    assert "+" + XSS[0] in added and "+# hello, world" in added
    assert removed == ["-# hello"]
    browser.screenshot("diff")

    gated = next(j for j in alice.jobs_in("completed") if "Write notes" in j["prompt"])
    browser.open(f"/ui/jobs/{gated['jobId']}/files")
    browser.screenshot("files")
    browser.wait_for("a.file", "notes.txt").click()
    browser.wait_for("ol.code li", "second line")
    browser.screenshot("file")
    browser.find("a.download").click()
    saved = browser.downloads / "notes.txt"
    wait_for(lambda: saved.exists() and saved.read_bytes() == NOTES.encode(), 30, "the download")


def test_register_a_repository_until_ready(browser: Browser, web_world: WebWorld) -> None:
    browser.as_user(web_world.alice.user)
    alice = web_world.alice
    source = home_of(alice.user) / "source-repo"
    browser.open("/ui/repositories")
    browser.find("#repo-name").send_keys("second")
    browser.find("#repo-url").send_keys(str(source))
    browser.find("#register").click()
    browser.wait_for("tr[data-repository='second']", "ready")
    assert alice.http.get("/repositories/second").json()["status"] == "ready"
    browser.screenshot("repositories")


def test_every_page_has_a_clean_console(browser: Browser, web_world: WebWorld) -> None:
    browser.as_user(web_world.alice.user)
    browser.logs()
    job_id = web_world.alice.jobs_in("completed")[0]["jobId"]
    for path in ["/ui/", "/ui/jobs/new", "/ui/repositories", f"/ui/jobs/{job_id}"]:
        browser.open(path)
        browser.wait_for("footer")
    browser.log_out()
    browser.screenshot("login")
    browser.log_in(web_world.admin)
    browser.wait_for("nav a", "Admin").click()
    browser.wait_for("h2", "Audit trail")
    assert web_world.alice.user.name in browser.text  # every user's jobs
    browser.screenshot("admin")
    console, requested = browser.logs()
    assert console == []
    assert hosts(requested) == {"127.0.0.1"}


# Without a browser: what a hostile page or script could send.


def _form_token(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def _logged_in(web_world: WebWorld, user: OsUser) -> tuple[httpx.Client, str]:
    """A client holding a dashboard session of `user`, and the session's form token."""
    client = httpx.Client(base_url=web_world.server.url, timeout=30)
    login = _form_token(client.get("/ui/login").text, "login_token")
    form = {"username": user.name, "password": user.password, "login_token": login}
    response = client.post("/ui/login", data=form)
    assert response.status_code == 303, response.text
    return client, _form_token(client.get("/ui/").text, "csrf")


def test_the_session_cookie_and_logout(web_world: WebWorld) -> None:
    client, csrf = _logged_in(web_world, web_world.alice.user)
    with closing(client):
        cookie = client.cookies["cbs_session"]
        me = client.get("/auth/me", headers={"Authorization": f"Bearer {cookie}"})
        assert me.json()["user"] == web_world.alice.user.name
        response = client.post("/ui/logout", data={"csrf": csrf})
        assert response.status_code == 303
        assert client.get("/ui/").headers["location"].startswith("/ui/login")
    me = httpx.get(f"{web_world.server.url}/auth/me", headers={"Authorization": f"Bearer {cookie}"})
    assert me.status_code == 401  # revoked like any token


def test_the_login_sets_a_strict_http_only_cookie(web_world: WebWorld) -> None:
    with httpx.Client(base_url=web_world.server.url) as client:
        login = _form_token(client.get("/ui/login").text, "login_token")
        user = web_world.alice.user
        response = client.post(
            "/ui/login",
            data={"username": user.name, "password": user.password, "login_token": login},
        )
    cookie = next(c for c in response.headers.get_list("set-cookie") if "cbs_session" in c)
    assert {"HttpOnly", "SameSite=strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    assert "Secure" not in cookie  # plain HTTP here; behind TLS it is set (tests/deploy)


def test_forms_refuse_cross_site_requests(web_world: WebWorld) -> None:
    alice = web_world.alice
    job = alice.create_job(alice.repo, "never started")
    client, csrf = _logged_in(web_world, alice.user)
    cancel = f"/ui/jobs/{job['jobId']}/cancel"
    with closing(client):
        refused = [
            client.post(cancel, data={}),
            client.post(cancel, data={"csrf": "0" * 64}),
            client.post(cancel, data={"csrf": "é" * 64}),
            client.post(cancel, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}),
            client.post(cancel, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}),
        ]
        assert [r.status_code for r in refused] == [403] * 5
        assert alice.job(job["jobId"])["status"] == "created"
        origin = web_world.server.url
        done = client.post(cancel, data={"csrf": csrf}, headers={"Origin": origin})
    assert done.status_code == 303
    assert alice.job(job["jobId"])["status"] == "cancelled"


def test_the_login_form_is_throttled_like_the_api(web_world: WebWorld) -> None:
    """The 20th failure of one caller refuses it, the form and the API alike. The caller is
    a local user of its own (the server knows a local caller by its OS user, whatever its
    address), so that the other tests, logging in as root, still may."""
    server = web_world.server
    statuses = []
    with LocalClient(server, web_world.users.create()) as client:
        for _ in range(PER_ADDRESS + 1):
            form = client.send(Request("/ui/login", "127.0.0.2", method="GET"))[0]
            cookie = next(
                c.split(";")[0]
                for c in form.headers.get_list("set-cookie")
                if c.startswith("cbs_login=")
            )
            login = _form_token(form.text, "login_token")
            name = f"nobody{secrets.token_hex(3)}"
            fields = {"username": name, "password": "wrong", "login_token": login}
            response = client.send(
                Request("/ui/login", "127.0.0.2", form=fields, headers={"Cookie": cookie})
            )[0]
            statuses.append(response.status_code)
        api = client.login("127.0.0.3", name, "wrong")
    assert statuses == [200] * PER_ADDRESS + [429]
    assert int(response.headers["retry-after"]) > 0
    assert "too many failed logins" in response.text
    assert api.status_code == 429  # one count for both, from any of its addresses


def test_pages_are_outside_the_api_schema_and_carry_a_strict_csp(web_world: WebWorld) -> None:
    with httpx.Client(base_url=web_world.server.url) as client:
        root = client.get("/")
        schema = client.get("/openapi.json").json()
        login = client.get("/ui/login")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    assert not [path for path in schema["paths"] if path == "/" or path.startswith("/ui")]
    policy = login.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy


def test_a_long_transcript_opens_a_page_at_a_time(browser: Browser, web_world: WebWorld) -> None:
    """10,000 events: the page shows the first 500 at once and the rest as the reader
    scrolls. (Written straight into the server's database: no real run makes so many
    events in the time a test has.)"""
    browser.as_user(web_world.alice.user)
    alice = web_world.alice
    job = alice.create_job(alice.repo, "a long story")
    alice.http.post(f"/jobs/{job['jobId']}/cancel")
    events = [
        Event(
            "assistant",
            json.dumps({"message": {"content": [{"type": "text", "text": f"line {n}"}]}}),
        )
        for n in range(1, LONG + 1)
    ]
    database = Database(f"sqlite:///{web_world.server.data_dir / 'server.db'}")
    try:
        with database.connection() as connection:
            EventStore.append_in(connection, job["jobId"], events)
    finally:
        database.close()

    browser.open(f"/ui/jobs/{job['jobId']}")
    count = "return document.querySelectorAll('.row.text').length"
    assert browser.driver.execute_script(count) == TRANSCRIPT_PAGE
    assert browser.all(".more")

    def scrolled_to_the_end() -> bool:
        browser.driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        return bool(browser.driver.execute_script(count) == LONG and not browser.all(".more"))

    wait_for(scrolled_to_the_end, WAIT, "the whole transcript", 0.2)
    last = "return document.querySelector('.row.text:last-of-type').textContent"
    assert browser.driver.execute_script(last) == f"line {LONG}"


def test_the_list_filters_and_pages(web_world: WebWorld) -> None:
    alice = web_world.alice
    made = {alice.create_job(alice.repo, f"batch job {n}")["jobId"] for n in range(PAGE_SIZE + 1)}
    client, _ = _logged_in(web_world, alice.user)
    with closing(client):
        first = client.get("/ui/", params={"status": "created"}).text
        rows = re.findall(r'data-job="([0-9a-f]{32})"', first)
        older = re.search(r'id="older" href="([^"]+)"', first)
        assert older is not None
        rest = client.get(html.unescape(older.group(1))).text
        rows += re.findall(r'data-job="([0-9a-f]{32})"', rest)
        other = client.get("/ui/", params={"status": "", "repository": "second"}).text
        everything = client.get("/ui/", params={"status": "", "repository": ""})
    assert made <= set(rows) and len(rows) == len(set(rows))
    assert 'data-job="' not in other  # no job of that repository
    assert everything.status_code == 200 and 'data-job="' in everything.text  # "any"


def test_another_user_finds_nothing_of_alice(web_world: WebWorld) -> None:
    alice = web_world.alice
    job_id = alice.create_job(alice.repo, "mine alone")["jobId"]
    bob = web_world.users.create()
    client, csrf = _logged_in(web_world, bob)
    with closing(client):
        pages = [
            client.get(f"/ui/jobs/{job_id}{tail}")
            for tail in ("", "/header", "/transcript", "/events", "/files", "/diff")
        ]
        pages.append(client.get(f"/ui/jobs/{job_id}/files/download", params={"path": "README.md"}))
        pages.append(client.post(f"/ui/jobs/{job_id}/delete", data={"csrf": csrf}))
        pages.append(client.post("/ui/repositories/shop/remove", data={"csrf": csrf}))
        admin = client.get("/ui/admin")
        listing = client.get("/ui/").text
    assert [page.status_code for page in pages] == [404] * len(pages)
    assert admin.status_code == 403
    assert job_id not in listing
    assert alice.job(job_id)["status"] == "created"


def test_the_list_shows_a_long_prompt_cut_and_the_users_jobs_alone(web_world: WebWorld) -> None:
    alice = web_world.alice
    first_line = "Réécris la facturation " + "é" * 3000 + " END-OF-LINE"
    prompt = f"{first_line}\nthen the second line {secrets.token_hex(4)}"
    job_id = alice.create_job(alice.repo, prompt)["jobId"]
    bob = Api(web_world.server, web_world.users.create())
    try:  # a repository of the same name as alice's
        bob.ready_repository("shop", make_git_repo(home_of(bob.user), bob.user))
        bobs = bob.create_job("shop", "bob's own job")["jobId"]
    finally:
        bob.close()
    client, _ = _logged_in(web_world, alice.user)
    with closing(client):
        listing = client.get("/ui/").text
        shop = client.get("/ui/", params={"repository": "shop"}).text
        whole = client.get(f"/ui/jobs/{job_id}").text
    row = re.search(rf'<tr[^>]*data-job="{job_id}".*?</tr>', listing, re.DOTALL)
    assert row is not None
    cell = re.search(r'<td class="prompt">(.*?)</td>', row.group(0), re.DOTALL)
    assert cell is not None
    shown = html.unescape(re.sub(r"<[^>]+>", "", cell.group(1))).strip()
    assert shown == first_line[:119] + "…"  # its first line's start
    assert "END-OF-LINE" not in listing and "second line" not in listing
    assert html.escape(prompt) in whole  # the job's own page shows it whole
    assert bobs not in listing and bobs not in shop
    assert job_id in shop
