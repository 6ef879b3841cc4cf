"""``lra.data.download`` against a local HTTP server on 127.0.0.1 (nothing leaves the machine): a checked download,
resume after a cut connection, a wrong checksum, a 404, the AAN members streamed out of a release archive, and
``prepare --download`` for text, image and retrieval. The archives are built in the tests, with contents whose
decoding (TFDS's byte-level IMDB text, TF's grayscale) is worked out by hand below."""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lra.data import download, image, prepare, text

TIMEOUT = 10  # seconds: every request and the server's socket are bounded


class Server:
    """Serves ``files`` (path -> bytes) with Range support; ``cut[path] = n`` makes the next response send only its
    first ``n`` bytes and close, ``stall`` does that with 0 bytes on every response; ``ignore_range`` answers every
    request with the whole file."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.stall = False
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = TIMEOUT

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m and not owner.ignore_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                n = 0 if owner.stall else owner.cut.pop(self.path, None)
                if n is not None:  # the connection drops part-way
                    self.wfile.write(payload[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = Server()
    yield s
    s.close()


def source_for(body: bytes, filename: str, *, published: bool = True, env: str = "LRA_URL_TEST") -> download.Source:
    return download.Source(url="http://127.0.0.1:1/unused", filename=filename,
                           size=len(body) if published else None,
                           sha256=hashlib.sha256(body).hexdigest() if published else None, env=env)


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def quiet(**kw):
    return dict(progress=False, retry_wait=0.0, timeout=TIMEOUT, **kw)


# ----------------------------------------------------------------------------------------------------- fetching

def test_published_sizes_and_digests_are_tfds_values():
    # tensorflow/datasets tensorflow_datasets/url_checksums/{imdb_reviews,cifar10}.txt
    imdb, cifar = download.SOURCES["imdb"], download.SOURCES["cifar10"]
    assert (imdb.filename, imdb.size, imdb.sha256[:12]) == ("aclImdb_v1.tar.gz", 84125825, "c40f74a18d3b")
    assert (cifar.filename, cifar.size, cifar.sha256[:12]) == ("cifar-10-binary.tar.gz", 170052171, "c4a38c50a1bc")
    assert imdb.url == text.URL and cifar.url == image.URL
    assert imdb.filename == text.ARCHIVE and cifar.filename == image.ARCHIVES["bin"]
    assert download.SOURCES["lra_release"].sha256 is None  # nothing published


def test_download_is_checked_and_renamed_into_place(server, tmp_path):
    body = bytes(range(256)) * 4000
    server.files["/a.bin"] = body
    path = download.fetch("x", tmp_path, url=server.url("/a.bin"), source=source_for(body, "a.bin"), **quiet())
    assert path == tmp_path / "a.bin" and path.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no .part left
    # already there and whole: checked, not fetched again
    n = len(server.requests)
    assert download.fetch("x", tmp_path, url=server.url("/a.bin"), source=source_for(body, "a.bin"), **quiet()) \
        == path
    assert len(server.requests) == n


def test_resume_after_a_cut_connection_uses_a_range_request(server, tmp_path):
    body = hashlib.sha256(b"seed").digest() * 20_000  # 640 kB
    server.files["/f.tar.gz"] = body
    server.cut["/f.tar.gz"] = 100_000
    path = download.fetch("x", tmp_path, url=server.url("/f.tar.gz"), source=source_for(body, "f.tar.gz"),
                          **quiet())
    assert path.read_bytes() == body
    assert server.requests == [("/f.tar.gz", None), ("/f.tar.gz", "bytes=100000-")]


def test_a_stalled_server_is_given_up_on_and_the_next_run_resumes(server, tmp_path, monkeypatch):
    body = bytes(range(251)) * 1000
    server.files["/f.bin"] = body
    server.cut["/f.bin"] = 30_000  # 30,000 bytes, then every attempt gets nothing
    src = source_for(body, "f.bin")
    first = download._transfer

    def then_stall(*a, **kw):
        try:
            return first(*a, **kw)
        finally:
            server.stall = True

    monkeypatch.setattr(download, "_transfer", then_stall)
    with pytest.raises(download.DownloadError, match=r"giving up after 2 failed attempts in a row .*"
                                                     r"30,000 bytes .* kept in .*\.f\.bin\.part"):
        download.fetch("x", tmp_path, url=server.url("/f.bin"), source=src, **quiet(retries=2))
    monkeypatch.setattr(download, "_transfer", first)
    assert [r for _, r in server.requests] == [None, "bytes=30000-", "bytes=30000-", "bytes=30000-"]
    assert (tmp_path / ".f.bin.part").stat().st_size == 30_000 and not (tmp_path / "f.bin").exists()
    server.stall = False  # the next run (e.g. after a kill) picks up the part file
    assert download.fetch("x", tmp_path, url=server.url("/f.bin"), source=src, **quiet()).read_bytes() == body
    assert server.requests[-1] == ("/f.bin", "bytes=30000-")


def test_a_whole_part_file_left_before_the_rename_is_checked_and_renamed(server, tmp_path):
    body = b"complete\n" * 1000
    server.files["/f.bin"] = body
    (tmp_path / ".f.bin.part").write_bytes(body)  # killed after the last byte, before the check and rename
    path = download.fetch("x", tmp_path, url=server.url("/f.bin"), source=source_for(body, "f.bin"), **quiet())
    assert path.read_bytes() == body and server.requests == [("/f.bin", f"bytes={len(body)}-")]  # answered 416


def test_a_server_that_ignores_the_range_sends_the_whole_file_again(server, tmp_path):
    body = b"0123456789" * 5000
    server.files["/f.bin"] = body
    server.ignore_range = True
    server.cut["/f.bin"] = 12_345
    path = download.fetch("x", tmp_path, url=server.url("/f.bin"), source=source_for(body, "f.bin"), **quiet())
    assert path.read_bytes() == body  # written from the start, not appended to the first 12,345 bytes


def test_a_wrong_checksum_names_the_file_and_both_digests(server, tmp_path):
    body, other = b"the real file\n" * 100, b"the wrong file\n" * 100
    server.files["/f.tar.gz"] = other[:len(body)]  # same size, other bytes
    src = source_for(body, "f.tar.gz")
    got = hashlib.sha256(other[:len(body)]).hexdigest()
    with pytest.raises(download.ChecksumError) as e:
        download.fetch("x", tmp_path, url=server.url("/f.tar.gz"), source=src, **quiet())
    message = str(e.value)
    assert str(tmp_path / "f.tar.gz") in message and src.sha256 in message and got in message
    assert list(tmp_path.iterdir()) == []  # the bad download is removed, nothing under the final name
    # a wrong size is caught from the response's header, before anything is written
    server.files["/f.tar.gz"] = body + b"x"
    with pytest.raises(download.ChecksumError, match=r"serves 1,401 bytes, but f.tar.gz has 1,400 bytes"):
        download.fetch("x", tmp_path, url=server.url("/f.tar.gz"), source=src, **quiet())


def test_a_file_already_there_with_the_wrong_digest_is_an_error(server, tmp_path):
    body = b"abc" * 100
    (tmp_path / "f.bin").write_bytes(b"xyz" * 100)
    with pytest.raises(download.ChecksumError, match=r"f\.bin: SHA-256 mismatch .*expected "
                                                     + hashlib.sha256(body).hexdigest()):
        download.fetch("x", tmp_path, url=server.url("/f.bin"), source=source_for(body, "f.bin"), **quiet())


def test_404_names_the_address_and_is_not_retried(server, tmp_path):
    with pytest.raises(download.DownloadError, match=r"/missing\.tar\.gz: HTTP 404 .*LRA_URL_TEST"):
        download.fetch("x", tmp_path, url=server.url("/missing.tar.gz"),
                       source=source_for(b"", "missing.tar.gz", published=False), **quiet())
    assert len(server.requests) == 1 and list(tmp_path.iterdir()) == []


def test_url_comes_from_the_argument_then_the_environment_then_the_table(server, tmp_path, monkeypatch):
    body = b"served locally\n"
    server.files["/env.bin"] = body
    monkeypatch.setitem(download.SOURCES, "imdb", source_for(body, "env.bin", env="LRA_URL_IMDB"))
    monkeypatch.setenv("LRA_URL_IMDB", server.url("/env.bin"))
    assert download.fetch("imdb", tmp_path, **quiet()).read_bytes() == body
    assert server.requests == [("/env.bin", None)]


# ----------------------------------------------------------------------------------------------------- archives

def test_aan_members_are_streamed_out_of_the_release_and_nothing_else(tmp_path):
    files = {f"lra_release/tsv_data/{n}": f"1\ta\tb\tb'{n}'\tb'x'\n".encode() for n in download.AAN_FILES}
    archive = tmp_path / "lra_release.gz"
    archive.write_bytes(tar_gz({"lra_release/listops-1000/basic_train.tsv": b"Source\tTarget\n",
                                **files, "lra_release/pathfinder32/huge.bin": b"\0" * 10_000}))
    out = download.extract_aan(archive, tmp_path / "data")
    assert out == tmp_path / "data" / "tsv_data"
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == sorted(("tsv_data",) + download.AAN_FILES)
    for n in download.AAN_FILES:
        assert (out / n).read_bytes() == files[f"lra_release/tsv_data/{n}"]
    other = tmp_path / "other.tar.gz"
    other.write_bytes(tar_gz({"lra_release/tsv_data/new_aan_pairs.train.tsv": b"1\ta\tb\tx\ty\n"}))
    with pytest.raises(ValueError, match=r"other\.tar\.gz: no tsv_data/new_aan_pairs\.eval\.tsv, "
                                         r"tsv_data/new_aan_pairs\.test\.tsv in the archive"):
        download.extract_aan(other, tmp_path / "data2")


# Hand-worked decoding. IMDB: TFDS's imdb_reviews text is the review file's bytes with surrounding ASCII whitespace
# stripped, and LRA's ByteTextEncoder maps byte b to id b + 1. The review "\t A\xc3\xa9<br />z \r\n" strips to
# "A\xc3\xa9<br />z": A = 65, 0xC3 = 195, 0xA9 = 169, '<' = 60, 'b' = 98, 'r' = 114, ' ' = 32, '/' = 47, '>' = 62,
# 'z' = 122, so ids 66 196 170 61 99 115 33 48 63 123.
REVIEW = b"\t A\xc3\xa9<br />z \r\n"
REVIEW_IDS = [66, 196, 170, 61, 99, 115, 33, 48, 63, 123]
# CIFAR-10 gray (tf.image.rgb_to_grayscale on uint8): trunc((0.2989 r + 0.5870 g + 0.1140 b) / 255 * 255.5).
# (0, 255, 0): 0.587 * 255.5 = 149.98 -> 149 (PIL's convert("L") rounds 0.587 * 255 = 149.69 up to 150);
# (100, 150, 200): (29.89 + 88.05 + 22.80) / 255 * 255.5 = 140.74 / 255 * 255.5 = 141.02 -> 141;
# (10, 20, 30): (2.989 + 11.74 + 3.42) / 255 * 255.5 = 18.149 * 1.00196 = 18.18 -> 18;
# (255, 255, 255): 0.9999 * 255.5 = 255.47 -> 255; (0, 0, 0) -> 0.
PIXELS = [((0, 255, 0), 149), ((100, 150, 200), 141), ((10, 20, 30), 18), ((255, 255, 255), 255), ((0, 0, 0), 0)]


def imdb_archive() -> bytes:
    members = {}
    for part in ("train", "test"):
        members[f"aclImdb/{part}/neg/0_1.txt"] = b"  Bad.  "
        members[f"aclImdb/{part}/pos/0_9.txt"] = REVIEW
        members[f"aclImdb/{part}/pos/1_8.txt"] = b"Good."
    members["aclImdb/train/unsup/0_0.txt"] = b"not read"
    return tar_gz(members)


def cifar_record(label: int, first_pixels) -> bytes:
    planes = np.zeros((3, 1024), np.uint8)
    for j, (rgb, _) in enumerate(first_pixels):
        planes[:, j] = rgb
    return bytes([label]) + planes.tobytes()


def cifar_archive() -> bytes:
    batches = {f"cifar-10-batches-bin/data_batch_{i}.bin": cifar_record(i, PIXELS) + cifar_record(9, PIXELS[::-1])
               for i in range(1, 6)}
    batches["cifar-10-batches-bin/test_batch.bin"] = cifar_record(7, PIXELS)
    return tar_gz({**batches, "cifar-10-batches-bin/batches.meta.txt": b"airplane\n"})


def test_imdb_decoding_worked_out_by_hand(tmp_path):
    (tmp_path / text.ARCHIVE).write_bytes(imdb_archive())
    text._MEMO.clear()
    split = text.load_split(tmp_path, "test", seq_len=12, cache=False)
    inputs = np.asarray(split["inputs"])
    assert split["labels"].tolist() == [0, 1, 1]  # neg, then pos by review id
    assert inputs[1].tolist() == REVIEW_IDS + [0, 0] and split["lengths"].tolist() == [4, 10, 5]
    assert inputs[0, :4].tolist() == [67, 98, 101, 47]  # "Bad." stripped of its spaces: B=66, a=97, d=100, .=46


def test_grayscale_decoding_worked_out_by_hand(tmp_path):
    (tmp_path / image.ARCHIVES["bin"]).write_bytes(cifar_archive())
    test = image.load_split(tmp_path, "test")
    assert test["labels"].tolist() == [7]
    assert test["inputs"][0, :len(PIXELS)].tolist() == [g for _, g in PIXELS] and not test["inputs"][0, 5:].any()
    train = image.load_split(tmp_path, "train")
    assert train["labels"].tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5]  # the first 9 of 10 (90%), in file order
    assert train["inputs"][1, :len(PIXELS)].tolist() == [g for _, g in PIXELS[::-1]]


# ----------------------------------------------------------------------------------------------------- prepare

@pytest.mark.parametrize("task", ["text", "image", "retrieval"])
def test_prepare_download_fetches_checks_and_prepares(task, server, tmp_path, monkeypatch, capsys):
    if task == "text":
        body = imdb_archive()
    elif task == "image":
        body = cifar_archive()
    else:
        body = tar_gz({f"lra_release/tsv_data/{n}": b"1\tP1\tP2\tb'one'\tb'two'\n0\tP3\tP4\tb'x'\tb'y'\n"
                       for n in download.AAN_FILES})
    name = download.TASK_SOURCES[task]
    real = download.SOURCES[name]
    monkeypatch.setitem(download.SOURCES, name, download.Source(
        real.url, real.filename, len(body), hashlib.sha256(body).hexdigest(), real.env))
    monkeypatch.setenv(real.env, server.url(f"/{real.filename}"))
    server.files[f"/{real.filename}"] = body
    server.cut[f"/{real.filename}"] = len(body) // 2
    text._MEMO.clear()
    prepare.main([f"--task={task}", f"--data_dir={tmp_path}", "--download", "--quiet"])
    out = capsys.readouterr().out
    manifest = json.loads(next((tmp_path / "prepared").glob(f"{task}-*.json")).read_text())
    assert manifest["task"] == task and f"{task}: train" in out
    if task == "retrieval":
        assert manifest["splits"]["test"]["examples"] == 2 and (tmp_path / "lra_release.gz").is_file()
    assert server.requests[-1][1] == f"bytes={len(body) // 2}-"  # resumed
    # a wrong published checksum stops it with both digests, and the task is not prepared from a bad file
    (tmp_path / real.filename).unlink()
    for d in ("prepared", "tsv_data"):
        if (tmp_path / d).is_dir():
            for f in (tmp_path / d).iterdir():
                f.unlink()
    monkeypatch.setitem(download.SOURCES, name, download.Source(real.url, real.filename, len(body), "0" * 64,
                                                                real.env))
    with pytest.raises(SystemExit, match=f"SHA-256 mismatch .*expected {'0' * 64} .*got "
                                         f"{hashlib.sha256(body).hexdigest()}"):
        prepare.main([f"--task={task}", f"--data_dir={tmp_path}", "--download", "--quiet"])


def test_download_is_refused_for_generated_tasks(tmp_path):
    with pytest.raises(SystemExit, match="--download is for image, retrieval, text; listops data are generated"):
        prepare.main(["--task=listops", f"--data_dir={tmp_path}", "--download"])


def test_an_unpacked_source_already_there_is_not_downloaded(fixtures_dir, tmp_path, capsys):
    shutil.copytree(fixtures_dir / "originals" / "cifar-10-batches-bin", tmp_path / "cifar-10-batches-bin")
    assert download.download_task("image", tmp_path, progress=False) == tmp_path / "cifar-10-batches-bin"
    assert "already there; nothing to download" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-bin"]
