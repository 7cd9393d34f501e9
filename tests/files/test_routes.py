"""Reading a job's files and its diff, after a real agent changed the workspace."""

from __future__ import annotations

from urllib.parse import quote

from tests.fake_anthropic import FakeAnthropic, bash, marker, text
from tests.fake_anthropic.images import tiny_png
from tests.jobs.conftest import JobWorldFactory
from tests.support.api import Api

CHANGES = (
    "echo 'a new line' >> README.md && mkdir -p notes && echo 'fresh' > 'notes/new file.txt' "
    "&& printf 'bin\\000ary' > blob.bin && printf 'caf\\303\\251\\n' > café.txt "
    "&& rm src/app.py"
)


def changed_job(world: JobWorldFactory, fake: FakeAnthropic) -> tuple[Api, str]:
    fake.add_script("change-things", [bash(CHANGES), text("Changed.")])
    alice = world().member()
    job = alice.run(alice.repo, f"Change {marker('change-things')}")
    assert alice.wait_ended(job["jobId"])["status"] == "completed"
    return alice, job["jobId"]


def test_list_download_content_and_diff(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    alice, job_id = changed_job(job_world, fake_anthropic)

    top = alice.http.get(f"/jobs/{job_id}/files").json()
    names = {entry["name"]: entry for entry in top}
    assert names["notes"]["type"] == "directory" and names["README.md"]["type"] == "file"
    assert names["README.md"]["size"] == len("# hello\na new line\n")
    assert {"blob.bin", "café.txt", ".git", "src"} <= set(names)
    nested = alice.http.get(f"/jobs/{job_id}/files", params={"path": "notes"}).json()
    assert nested == [
        {
            **nested[0],
            "name": "new file.txt",
            "path": "notes/new file.txt",
            "type": "file",
            "size": 6,
        }
    ]

    download = alice.http.get(
        f"/jobs/{job_id}/files/download", params={"path": "notes/new file.txt"}
    )
    assert download.status_code == 200 and download.content == b"fresh\n"
    assert download.headers["content-type"].startswith("text/plain")
    assert 'attachment; filename="new file.txt"' in download.headers["content-disposition"]
    unicode = alice.http.get(f"/jobs/{job_id}/files/download", params={"path": "café.txt"})
    assert f"filename*=UTF-8''{quote('café.txt')}" in unicode.headers["content-disposition"]

    part = alice.http.get(
        f"/jobs/{job_id}/files/download",
        params={"path": "README.md"},
        headers={"Range": "bytes=2-6"},
    )
    assert part.status_code == 206 and part.content == b"hello"
    assert part.headers["content-range"] == "bytes 2-6/19"
    tail = alice.http.get(
        f"/jobs/{job_id}/files/download",
        params={"path": "README.md"},
        headers={"Range": "bytes=-5"},
    )
    assert tail.content == b"line\n"
    beyond = alice.http.get(
        f"/jobs/{job_id}/files/download",
        params={"path": "README.md"},
        headers={"Range": "bytes=100-"},
    )
    assert beyond.status_code == 416

    content = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "café.txt"})
    assert content.json() == {
        "path": "café.txt",
        "content": "café\n",
        "encoding": "utf-8",
        "size": 6,
    }
    binary = alice.http.get(f"/jobs/{job_id}/files/content", params={"path": "blob.bin"})
    assert binary.status_code == 415

    diff = alice.http.get(f"/jobs/{job_id}/diff")
    assert diff.status_code == 200
    assert diff.headers["content-type"].startswith("text/x-diff")
    text_of = diff.text
    assert "+a new line" in text_of
    assert "+++ b/notes/new file.txt" in text_of and "+fresh" in text_of
    assert "Binary files /dev/null and b/blob.bin differ" in text_of
    assert "deleted file mode" in text_of and "-print('hi')" in text_of
    assert "claude-batch" not in text_of


def test_a_job_without_a_workspace_has_no_files(job_world: JobWorldFactory) -> None:
    alice = job_world().member()
    job = alice.create_job(alice.repo, "not started")
    assert alice.http.get(f"/jobs/{job['jobId']}/files").status_code == 404
    assert alice.http.get(f"/jobs/{job['jobId']}/diff").status_code == 404


def test_diff_of_a_job_with_images(
    job_world: JobWorldFactory, fake_anthropic: FakeAnthropic
) -> None:
    """The images the server put in the workspace are not the job's changes: left out of the
    diff, which works (it answered 503 for every job with images)."""
    fake_anthropic.add_script(
        "change-with-image", [bash("echo 'seen the picture' >> README.md"), text("Done.")]
    )
    alice = job_world().member()
    job = alice.create_job(alice.repo, f"Look {marker('change-with-image')}")["jobId"]
    png = ("file", ("shot.png", tiny_png(), "image/png"))
    assert alice.http.post(f"/jobs/{job}/images", files=[png]).status_code == 201
    alice.start(job)
    assert alice.wait_ended(job)["status"] == "completed"
    diff = alice.http.get(f"/jobs/{job}/diff")
    assert diff.status_code == 200, diff.text
    assert "+seen the picture" in diff.text
    assert "claude-batch" not in diff.text and "shot.png" not in diff.text
