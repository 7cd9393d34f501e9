"""docker/nginx.conf for real: Debian's nginx runs it, changed only in its upstream
address, listen address and certificate paths, with a certificate made here, in front of
the real server running real jobs. Login, uploads, limits and the event stream go
through it over HTTPS."""

from __future__ import annotations

import http.client
import itertools
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import DOCKER, tool
from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api
from tests.support.server import LiveServer, free_port, wait_for
from tests.support.users import UserFactory

MiB = 1024 * 1024
UPLOAD_LIMIT = 210 * MiB  # the server's own limit on /jobs/{id}/images
JSON_LIMIT = 4 * MiB
STREAM_STEP = 2.0  # seconds each bash step of the slow job sleeps


@dataclass
class Proxy:
    url: str
    port: int
    tls: ssl.SSLContext
    log: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=self.tls, timeout=60)

    def declare_body(self, path: str, length: int, token: str) -> tuple[int, str]:
        """Send only the headers of a POST that announces `length` bytes: nginx answers
        at once when that is over its limit. Returns (status, Server header)."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls)
        try:
            connection.putrequest("POST", path)
            connection.putheader("Authorization", f"Bearer {token}")
            connection.putheader("Content-Type", "multipart/form-data; boundary=x")
            connection.putheader("Content-Length", str(length))
            connection.endheaders()
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("Server", "")
        finally:
            connection.close()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    certificate, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(certificate),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )  # fmt: skip
    return certificate, key


def adapted_config(upstream: str, port: int, tls_dir: Path) -> str:
    """docker/nginx.conf with only the upstream, the listen address and the certificate
    folder changed; each must be found exactly where the compose setup has it."""
    conf = (DOCKER / "nginx.conf").read_text()
    changes = [
        ("server server:8080;", f"server {upstream};", 1),
        ("listen 8443 ssl;", f"listen 127.0.0.1:{port} ssl;", 1),
        ("/etc/nginx/tls/", f"{tls_dir}/", 2),
    ]
    for old, new, count in changes:
        assert conf.count(old) == count, f"docker/nginx.conf: expected {old!r} {count}x"
        conf = conf.replace(old, new)
    return conf


def _accepts(port: int, process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"nginx exited {process.returncode}:\n{log.read_text()}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


StartProxy = Callable[[LiveServer], Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[StartProxy]:
    """`start_proxy(server)`: nginx with docker/nginx.conf in front of a live server."""
    nginx = tool("nginx", "the Debian package nginx (scripts/bootstrap-system.sh)")
    started: list[subprocess.Popen[bytes]] = []

    def start(server: LiveServer) -> Proxy:
        folder = tmp_path / "nginx"
        (folder / "tls").mkdir(parents=True)
        certificate, _ = make_certificate(folder / "tls")
        port = free_port()
        conf = folder / "nginx.conf"
        conf.write_text(adapted_config(f"127.0.0.1:{server.port}", port, folder / "tls"))
        log = folder / "nginx.log"
        # Debian's build: workers as www-data, as its own nginx.conf has it; no daemon
        directives = f"daemon off; pid {folder}/nginx.pid; user www-data;"
        command = [str(nginx), "-p", f"{folder}/", "-c", str(conf), "-e", str(log)]
        checked = subprocess.run(
            [*command, "-t", "-q", "-g", directives], capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stderr + log.read_text()
        with log.open("ab") as output:
            process = subprocess.Popen(
                [*command, "-g", directives], stdout=output, stderr=subprocess.STDOUT
            )
        started.append(process)
        wait_for(lambda: _accepts(port, process, log), 20, f"nginx on port {port}")
        context = ssl.create_default_context(cafile=str(certificate))
        return Proxy(f"https://127.0.0.1:{port}", port, context, log)

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_login_and_api_over_https(
    job_world: JobWorldFactory, users: UserFactory, start_proxy: StartProxy
) -> None:
    admins = users.group()
    world = job_world(ADMIN_GROUP=admins)
    alice = world.member()
    admin = users.create(groups=(admins,))
    proxy = start_proxy(world.server)

    with proxy.client() as anonymous:
        health = anonymous.get("/health")
        assert health.status_code == 200, health.text
        assert health.headers["server"] == "nginx"  # no version: server_tokens off
        assert health.headers["strict-transport-security"].startswith("max-age=")
        login = anonymous.post(
            "/auth/login", json={"username": alice.user.name, "password": alice.user.password}
        )
        assert login.status_code == 200, login.text
        wrong = anonymous.post(
            "/auth/login", json={"username": alice.user.name, "password": "not-it"}
        )
        assert wrong.status_code == 401
        assert wrong.json() == {"detail": "invalid username or password"}
        # a client cannot choose the address it is throttled and audited under
        spoofed = anonymous.post(
            "/auth/login",
            json={"username": admin.name, "password": admin.password},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        assert spoofed.status_code == 200, spoofed.text
    with proxy.client(login.json()["token"]) as client:
        me = client.get("/auth/me")
        assert me.status_code == 200 and me.json()["user"] == alice.user.name
        repository = client.get(f"/repositories/{alice.repo}")
        assert repository.json()["status"] == "ready"
    with proxy.client(spoofed.json()["token"]) as client:
        audit = client.get("/audit", params={"user": admin.name})
        assert audit.status_code == 200, audit.text
        assert audit.json() and {entry["address"] for entry in audit.json()} == {"127.0.0.1"}


def test_large_uploads_pass_and_the_limits_hold(
    job_world: JobWorldFactory, start_proxy: StartProxy
) -> None:
    world = job_world()
    alice = world.member()
    proxy = start_proxy(world.server)
    job = alice.create_job(alice.repo, f"Look {marker('hello')}")
    images = [tiny_png(2, 2, (i, 0, 0)) + bytes(6 * MiB) for i in range(3)]  # 18 MiB

    with proxy.client(alice.token) as client:
        parts = [("file", (f"pic{i}.png", data, "image/png")) for i, data in enumerate(images)]
        upload = client.post(f"/jobs/{job['jobId']}/images", files=parts)
        assert upload.status_code == 201, upload.text
        assert upload.json() == [
            {"name": f"pic{i}.png", "size": len(data)} for i, data in enumerate(images)
        ]
        # a JSON body under the server's 4 MiB passes nginx (its default would be 1 MiB)
        prompt = "x" * (2 * MiB)
        big_json = client.post("/jobs", json={"repository": alice.repo, "prompt": prompt})
        assert big_json.status_code != 413, big_json.text
    assert alice.job(job["jobId"])["images"] == ["pic0.png", "pic1.png", "pic2.png"]

    # over the limits, nginx answers 413 itself, from the headers alone
    images_path = f"/jobs/{job['jobId']}/images"
    assert proxy.declare_body(images_path, UPLOAD_LIMIT + 1, alice.token) == (413, "nginx")
    assert proxy.declare_body("/jobs", JSON_LIMIT + 1, alice.token) == (413, "nginx")


@dataclass
class Arrival:
    at: float  # time.monotonic() when the client had read it
    id: str
    event: str
    data: str


def read_stream(client: httpx.Client, path: str, headers: dict[str, str]) -> list[Arrival]:
    """Reads a Server-Sent Events stream to its end, noting when each event arrived."""
    seen: list[Arrival] = []
    fields = {"id": "", "event": "message", "data": ""}
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(120)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if fields["data"]:
                    seen.append(Arrival(time.monotonic(), **fields))
                fields = {"id": "", "event": "message", "data": ""}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    return seen


def test_job_events_stream_through_one_by_one(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, start_proxy: StartProxy
) -> None:
    steps = [bash(f"sleep {STREAM_STEP}", f"Wait {n}") for n in range(3)]
    fake_anthropic.add_script("deploy-slow-steps", [*steps, text("Waited.")])
    world = job_world()
    alice: Api = world.member()
    proxy = start_proxy(world.server)
    job = alice.run(alice.repo, f"Wait a bit {marker('deploy-slow-steps')}")

    with proxy.client(alice.token) as client:
        arrivals = read_stream(client, f"/jobs/{job['jobId']}/events", {})
        done = alice.job(job["jobId"])
        assert done["status"] == "completed", done
        events = [a for a in arrivals if a.event == "message"]
        assert [int(a.id) for a in events] == list(range(1, len(events) + 1))
        assert arrivals[-1].event == "end"
        # each tool result came through while the job still ran, not all at the end
        results = [a for a in events if '"type":"user"' in a.data]
        assert len(results) == len(steps), [a.data[:80] for a in events]
        end = arrivals[-1].at
        assert end - events[0].at > 2 * STREAM_STEP, [round(end - a.at, 2) for a in events]
        for earlier, later in itertools.pairwise(results):
            assert later.at - earlier.at > STREAM_STEP / 2, [round(a.at - end, 2) for a in events]

        # and a reconnect with Last-Event-ID gets just the rest
        last = len(events) - 2
        rest = read_stream(client, f"/jobs/{job['jobId']}/events", {"Last-Event-ID": str(last)})
        assert [a.id for a in rest if a.event == "message"] == [
            str(n) for n in range(last + 1, len(events) + 1)
        ]


def test_config_keeps_event_streams_unbuffered() -> None:
    """The server sends X-Accel-Buffering: no as well; the proxy must not rely on it."""
    conf = (DOCKER / "nginx.conf").read_text()
    for location in ("location ~ ^/jobs/[^/]+/events$", "location ~ ^/ui/jobs/[^/]+/events$"):
        events = conf[conf.index(location) :]
        events = events[: events.index("}")]
        assert "proxy_buffering off;" in events and "proxy_cache off;" in events
    uploads = conf[conf.index("location ~ ^/jobs/[^/]+/images$") :]
    uploads = uploads[: uploads.index("}")]
    assert "client_max_body_size 210m;" in uploads
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


def test_the_dashboard_over_https(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic, start_proxy: StartProxy
) -> None:
    """Log in through the proxy (a Secure cookie, the form's Origin checked against the
    Host nginx passes on), and the job page's event stream arrives while the job runs."""
    steps = [bash(f"sleep {STREAM_STEP}", f"Wait {n}") for n in range(2)]
    fake_anthropic.add_script("deploy-web-steps", [*steps, text("Waited.")])
    world = job_world(TRUSTED_PROXIES="127.0.0.1")  # its X-Forwarded-Proto: https
    alice = world.member()
    proxy = start_proxy(world.server)
    origin = {"Origin": proxy.url}

    with proxy.client() as browser:
        form = browser.get("/ui/login").text
        token = form.split('name="login_token" value="')[1].split('"')[0]
        credentials = {"username": alice.user.name, "password": alice.user.password}
        login = browser.post(
            "/ui/login", data={**credentials, "login_token": token}, headers=origin
        )
        assert login.status_code == 303, login.text
        cookie = next(c for c in login.headers.get_list("set-cookie") if "cbs_session" in c)
        assert "Secure" in cookie and "HttpOnly" in cookie
        job = alice.run(alice.repo, f"Wait {marker('deploy-web-steps')}")
        assert browser.get("/ui/").status_code == 200

        statuses = []
        path = f"/ui/jobs/{job['jobId']}/events"
        with browser.stream("GET", path, timeout=httpx.Timeout(120)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data:") and "sleep" in line:
                    statuses.append(alice.job(job["jobId"])["status"])
        assert "running" in statuses  # rows came through before the job ended
        assert alice.job(job["jobId"])["status"] == "completed"
