"""``musicssl serve``'s HTTP API through the ASGI test client: the same records
as ``musicssl key/beats --format json``, the CLI's error records for bad files
(4xx, never a traceback), limits (413, 422, 503), temp files removed, and 20
concurrent uploads all answered while ``/v1/health`` keeps answering."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed (pip install 'musicssl[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install 'musicssl[test]')")

from audio_factory import (write_empty_wav, write_nonfinite_wav, write_random_bytes,  # noqa: E402
                           write_silent_wav, write_text_as_mp3, write_zero_byte_file)
from fastapi.testclient import TestClient  # noqa: E402

from musicssl.cli.main import main  # noqa: E402
from musicssl.serve.analysis import Analyzer, ServeConfig  # noqa: E402
from musicssl.serve.app import EXAMPLE, create_app  # noqa: E402

EXAMPLE_BYTES = EXAMPLE.read_bytes()


@pytest.fixture(scope="module")
def uploads_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def client(uploads_dir):
    with TestClient(create_app(ServeConfig(tmp_dir=str(uploads_dir)))) as c:
        yield c


def cli_records(capsys, command: str, *args) -> dict[str, dict]:
    """``musicssl COMMAND --format json ARGS`` -> records by file name."""
    main([command, "--format", "json", "--no-progress", *map(str, args)])
    records = json.loads(capsys.readouterr().out)
    return {r["path"].rsplit("/", 1)[-1]: r for r in records}


def post(client, endpoint: str, name: str, content: bytes, **params):
    return client.post(endpoint, params=params, files={"file": (name, content, "application/octet-stream")})


# --- good files ------------------------------------------------------------------------

def test_health_reports_models_and_limits(client):
    r = client.get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["key_model"] == "skey-band+kostka-payne"
    assert body["max_upload_bytes"] == 200_000_000 and body["max_duration_s"] == 1200


@pytest.mark.parametrize("options", [[], ["--local", "--notation", "camelot"]])
def test_key_record_is_the_cli_record(client, capsys, options):
    expected = cli_records(capsys, "key", *options, EXAMPLE)[EXAMPLE.name]
    params = {"local": "true", "notation": "camelot"} if options else {}
    r = post(client, "/v1/key", EXAMPLE.name, EXAMPLE_BYTES, **params)
    assert r.status_code == 200
    assert r.json() == {**expected, "path": EXAMPLE.name}
    assert list(r.json()) == list(expected)


def test_beats_record_is_the_cli_record(client, capsys):
    expected = cli_records(capsys, "beats", EXAMPLE)[EXAMPLE.name]
    r = post(client, "/v1/beats", EXAMPLE.name, EXAMPLE_BYTES)
    assert r.status_code == 200
    assert r.json() == {**expected, "path": EXAMPLE.name}
    assert r.json()["n_beats"] > 50 and r.json()["tracker"] == "onset+dbn"


def test_beats_activation_option_reaches_zerons(client, capsys):
    expected = cli_records(capsys, "beats", EXAMPLE, "--activation", "zerons")[EXAMPLE.name]
    r = post(client, "/v1/beats", EXAMPLE.name, EXAMPLE_BYTES, activation="zerons")
    assert r.status_code == 200 and r.json()["tracker"] == "zerons+dbn"
    assert r.json() == {**expected, "path": EXAMPLE.name}
    assert post(client, "/v1/beats", "a.ogg", EXAMPLE_BYTES, activation="magic").status_code == 422


def test_keys_lists_the_24_keys_in_a_notation(client):
    body = client.get("/v1/keys", params={"notation": "camelot"}).json()
    assert len(body["labels"]) == len(body["names"]) == len(body["short"]) == 24
    assert body["labels"][2] == "D major" and body["names"][2] == "10B"


def test_query_options_are_validated(client):
    assert post(client, "/v1/key", "a.ogg", EXAMPLE_BYTES, notation="roman").status_code == 422
    assert post(client, "/v1/key", "a.ogg", EXAMPLE_BYTES, transpositions=0).status_code == 422
    assert post(client, "/v1/key", "a.ogg", EXAMPLE_BYTES, window=-1).status_code == 422
    assert post(client, "/v1/beats", "a.ogg", EXAMPLE_BYTES, tracker="magic").status_code == 422
    assert client.post("/v1/key").status_code == 422  # no file


def test_openapi_docs_are_served_without_a_cdn(client):
    pytest.importorskip("swagger_ui_bundle", reason="swagger-ui-bundle-v2 is not installed")
    page = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/key", "/v1/beats", "/v1/health"} <= set(paths)


def test_page_and_its_assets_are_served_locally(client):
    page = client.get("/").text
    assert 'id="drop"' in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/v1/example").content == EXAMPLE_BYTES


# --- bad files: the CLI's error records, 4xx ---------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    sr = 22050
    short = folder / "short.wav"
    sf.write(short, (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr // 20) / sr)).astype(np.float32), sr)
    return [write_zero_byte_file(folder), write_empty_wav(folder), write_silent_wav(folder),
            write_random_bytes(folder), write_text_as_mp3(folder), write_nonfinite_wav(folder), short]


@pytest.mark.parametrize("command", ["key", "beats"])
def test_bad_files_give_the_cli_error_records(client, capsys, bad_files, command, uploads_dir):
    expected = cli_records(capsys, command, *bad_files)
    for path in bad_files:
        r = post(client, f"/v1/{command}", path.name, path.read_bytes())
        assert 400 <= r.status_code < 500, (path.name, r.status_code, r.text)
        record = r.json()
        assert record == {**expected[path.name], "path": path.name}, path.name
        assert str(uploads_dir) not in record["message"]
    assert list(uploads_dir.iterdir()) == []  # every upload's temp file is gone


def test_a_client_path_names_the_record_and_is_never_opened(client):
    r = post(client, "/v1/key", "../../etc/hostname", b"plain text, not audio")
    assert r.status_code == 422
    assert r.json()["path"] == "hostname" and r.json()["error"] == "AudioDecodeError"


# --- limits -----------------------------------------------------------------------------------

def test_oversize_upload_gets_413(uploads_dir):
    app = create_app(ServeConfig(max_upload_bytes=50_000, tmp_dir=str(uploads_dir)))
    with TestClient(app) as c:
        r = post(c, "/v1/key", EXAMPLE.name, EXAMPLE_BYTES)  # 185 kB, Content-Length says so
        assert r.status_code == 413
        assert r.json()["error"] == "UploadTooLargeError" and "50 MB" not in r.json()["message"]
        assert "0.05 MB" in r.json()["message"]
        # no Content-Length (chunked): cut off while streaming
        body = (b"--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.ogg\"\r\n"
                b"Content-Type: audio/ogg\r\n\r\n" + EXAMPLE_BYTES + b"\r\n--xx--\r\n")
        r = c.post("/v1/key", content=(body[i:i + 8192] for i in range(0, len(body), 8192)),
                   headers={"content-type": "multipart/form-data; boundary=xx"})
        assert r.status_code == 413 and r.json()["error"] == "UploadTooLargeError"
        assert c.get("/v1/health").status_code == 200
    assert list(uploads_dir.iterdir()) == []


def test_too_long_audio_gets_422(uploads_dir):
    with TestClient(create_app(ServeConfig(max_duration_s=10, tmp_dir=str(uploads_dir)))) as c:
        r = post(c, "/v1/beats", EXAMPLE.name, EXAMPLE_BYTES)
    assert r.status_code == 422
    assert r.json()["error"] == "AudioTooLongError" and "at most 10 s" in r.json()["message"]


def test_full_queue_gets_503_and_health_still_answers():
    release = threading.Event()

    class Blocking(Analyzer):
        def load(self):
            pass

        def key(self, upload, name, **options):
            release.wait(10)
            return 200, {"path": name, "key": None}

    config = ServeConfig(workers=1, max_pending=1)
    app = create_app(config, analyzer=Blocking(config))

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            first = asyncio.create_task(c.post("/v1/key", files={"file": ("a.ogg", b"x")}))
            while app.state.analyzer.describe()["pending"] < 1:
                await asyncio.sleep(0.01)
            second = await c.post("/v1/key", files={"file": ("b.ogg", b"x")})
            health = await c.get("/v1/health")
            release.set()
            return await first, second, health

    first, second, health = asyncio.run(scenario())
    assert second.status_code == 503 and second.json()["error"] == "ServerBusyError"
    assert health.status_code == 200 and health.json()["pending"] == 1
    assert first.status_code == 200 and first.json() == {"path": "a.ogg", "key": None}


def test_twenty_concurrent_uploads_are_all_answered(uploads_dir):
    config = ServeConfig(workers=2, tmp_dir=str(uploads_dir))
    app = create_app(config)
    app.state.analyzer.load()

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     timeout=300) as c:
            uploads = [asyncio.create_task(c.post("/v1/key", files={"file": (f"{i}.ogg", EXAMPLE_BYTES)}))
                       for i in range(20)]
            while app.state.analyzer.describe()["pending"] < 2:
                await asyncio.sleep(0.01)
            start = time.perf_counter()
            health = await c.get("/v1/health")
            health_s = time.perf_counter() - start
            busy = sum(not u.done() for u in uploads)
            return await asyncio.gather(*uploads), health, health_s, busy

    responses, health, health_s, busy = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 20
    assert sorted(r.json()["path"] for r in responses) == sorted(f"{i}.ogg" for i in range(20))
    assert {r.json()["key"] for r in responses} == {"D major"}
    assert health.status_code == 200 and busy > 0 and health.json()["pending"] > 0
    assert health_s < 5.0
    assert list(uploads_dir.iterdir()) == []


# --- the command ----------------------------------------------------------------------------

def test_serve_without_the_extra_is_a_clear_usage_error(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert main(["serve"]) == 2
    assert "pip install 'musicssl[serve]'" in capsys.readouterr().err


def test_serve_starts_uvicorn_on_loopback_by_default(monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(app=app, host=host, port=port))
    assert main(["serve", "--port", "8123", "--max-upload-mb", "5"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["app"].state.analyzer.config.max_upload_bytes == 5_000_000


def test_beats_meter_option_is_the_cli_option(client, capsys):
    expected = cli_records(capsys, "beats", EXAMPLE, "--meter", "3")[EXAMPLE.name]
    r = post(client, "/v1/beats", EXAMPLE.name, EXAMPLE_BYTES, meter="3")
    assert r.status_code == 200 and r.json() == {**expected, "path": EXAMPLE.name}
    assert r.json()["beats_per_bar"] == 3 and set(r.json()["beat_numbers"]) == {1, 2, 3}
    assert post(client, "/v1/beats", "a.ogg", EXAMPLE_BYTES, meter="waltz").status_code == 422
