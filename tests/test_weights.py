"""Named weights: fetched from a loopback HTTP server (no network here), resumed, checked, cached atomically."""

import http.server
import io
import threading
import types
from pathlib import Path

import pytest
import torch

from inolib import config as C
from inolib import weights
from inolib.model import build_backbone

SMALL = C.override(C.smoke(), {"model.embed_dim": "192", "model.num_heads": "3"}).model  # widths loaders know


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) with HTTP ranges; ``server.drop`` (name -> n) sends the full length
    in the header but only n bytes, once (a transfer cut by the network)."""

    def do_GET(self):  # noqa: N802 - the http.server name
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append((name, self.headers.get("Range")))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = self.server.drop.pop(name, None)
        self.wfile.write(data[start:cut] if cut is not None else data[start:])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    srv.files, srv.drop, srv.requests = {}, {}, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tiny_name(monkeypatch, tmp_path, server):
    """A registry entry for a small ViT (ViT-Tiny width, 2 blocks), served by the loopback mirror."""
    m = SMALL
    entry = weights.Weights("test-vit", "a small ViT for tests", "https://example.invalid/test-vit.pth", "MIT",
                            m.patch_size, m.embed_dim, m.depth)
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    torch.manual_seed(0)
    vit = build_backbone(m)
    buf = io.BytesIO()
    torch.save({k: v for k, v in vit.state_dict().items() if k != "mask_token"}, buf)  # a DINO-style bare state
    server.files["test-vit.pth"] = buf.getvalue()
    env = {"INOLIB_CACHE": str(tmp_path / "cache"),
           "INOLIB_WEIGHTS_MIRROR": f"http://127.0.0.1:{server.server_address[1]}/mirror"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return entry, vit, env


def test_fetch_from_a_mirror_checks_caches_and_does_not_download_twice(tiny_name, server):
    entry, vit, env = tiny_name
    path = weights.fetch(entry.name, progress=False)
    assert path == Path(env["INOLIB_CACHE"]) / "weights" / "test-vit.pth" and path.read_bytes() == server.files[
        "test-vit.pth"]
    assert server.requests == [("test-vit.pth", None)]
    assert weights.fetch(entry.name, progress=False) == path and len(server.requests) == 1  # cached
    assert weights.resolve("test-vit") == path and weights.cached("test-vit") == path
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["pos_embed"], vit.state_dict()["pos_embed"])
    assert list(path.parent.iterdir()) == [path]  # no partial file left


def test_an_interrupted_transfer_resumes_where_it_stopped(tiny_name, server):
    entry, _, _ = tiny_name
    data = server.files["test-vit.pth"]
    server.drop["test-vit.pth"] = len(data) // 3
    path = weights.fetch(entry.name, progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("test-vit.pth", None), ("test-vit.pth", f"bytes={len(data) // 3}-")]


def test_a_partial_file_from_an_earlier_run_is_resumed(tiny_name, server):
    entry, _, env = tiny_name
    data = server.files["test-vit.pth"]
    folder = Path(env["INOLIB_CACHE"]) / "weights"
    folder.mkdir(parents=True)
    (folder / "test-vit.pth.part").write_bytes(data[:1000])
    assert weights.fetch(entry.name, progress=False).read_bytes() == data
    assert server.requests == [("test-vit.pth", "bytes=1000-")]


@pytest.mark.parametrize("damage", ["cut short", "not a checkpoint", "another model"])
def test_a_damaged_download_is_refused_naming_it_and_leaves_nothing(tiny_name, server, capsys, damage):
    from inolib.cli import main

    entry, _, env = tiny_name
    data = server.files["test-vit.pth"]
    if damage == "cut short":
        server.files["test-vit.pth"] = data[: len(data) // 2]  # a complete response of half a file
    elif damage == "not a checkpoint":
        server.files["test-vit.pth"] = b"<html>quota exceeded</html>" * 10
    else:
        buf = io.BytesIO()
        torch.save(build_backbone(C.override(C.smoke(), {"model.depth": "3", "model.embed_dim": "192",
                                                          "model.num_heads": "3"}).model).state_dict(), buf)
        server.files["test-vit.pth"] = buf.getvalue()
    assert main(["weights", "fetch", "test-vit"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (after the progress bar)
    assert len(err) == 1 and "test-vit.pth" in err[0]
    err = err[0]
    if damage == "another model":
        assert "3 blocks" in err
    folder = Path(env["INOLIB_CACHE"]) / "weights"
    assert not list(folder.iterdir())


def test_an_unknown_name_lists_the_known_ones(capsys):
    from inolib.cli import main

    with pytest.raises(weights.WeightsError, match="dino-vits8.*dinov2-vits14"):
        weights.resolve("dino-vits32")
    assert weights.resolve("some/file.pth") == Path("some/file.pth")  # paths stay paths
    assert main(["weights", "fetch", "nope"]) == 2 and "known names" in capsys.readouterr().err


def test_ino_weights_list_says_what_is_cached(tiny_name, capsys):
    from inolib.cli import main

    weights.fetch("test-vit", progress=False)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ino-vits8-charades", "dino-vits8", "dino-vits16", "dinov2-vits14"):
        assert name in out
    assert "licence Apache-2.0" in out and "cached " + str(weights.cached("test-vit")) in out


def test_propagate_takes_a_name_through_the_mirror(tiny_name, server, tmp_path):
    from inolib.cli import main
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout

    davis = tmp_path / "davis"
    write_davis_layout(make_synthetic_video(4, 64, 96, 1, 0, seed=30_002, name="s"), davis)
    args = ["propagate", "--checkpoint", "test-vit", "--preset", "smoke", "--davis", str(davis),
            "--propagation.short_side", "64", "--propagation.feature_block", "2"]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 0
    assert main([*args, "--out", str(tmp_path / "o2")]) == 0  # the second run reuses the cached file
    assert [r for r in server.requests] == [("test-vit.pth", None)]
    assert sorted(p.name for p in (tmp_path / "o1/s").iterdir()) == [f"{t:05d}.png" for t in range(4)]


def test_a_drive_folder_is_listed_and_the_named_file_taken(tiny_name, monkeypatch, tmp_path):
    entry, _, env = tiny_name
    monkeypatch.delenv("INOLIB_WEIGHTS_MIRROR")
    drive = weights.Weights("test-drive", "from a folder", "gdrive-folder:FOLDER", "MIT", entry.patch, entry.width,
                            entry.depth, pick=r"(?i)charades")
    monkeypatch.setitem(weights.REGISTRY, drive.name, drive)
    data = weights.fetch(entry.name, env={**env, "INOLIB_CACHE": str(tmp_path / "other")}, progress=False)
    calls = []

    def download_folder(id, output, quiet, skip_download):  # noqa: A002 - gdown's argument name
        calls.append(id)
        return [types.SimpleNamespace(path=f"{output}/ino_charades.pth", id="F1"),
                types.SimpleNamespace(path=f"{output}/ino_k400.pth", id="F2")]

    def download(id, output, quiet, resume):  # noqa: A002
        assert id == "F1" and resume
        Path(output).write_bytes(data.read_bytes())

    monkeypatch.setitem(__import__("sys").modules, "gdown",
                        types.SimpleNamespace(download_folder=download_folder, download=download))
    path = weights.fetch("test-drive", progress=False)
    assert calls == ["FOLDER"] and path.read_bytes() == data.read_bytes() and path.name == "test-drive.pth"
    nomatch = weights.Weights("test-none", "x", "gdrive-folder:FOLDER", "MIT", 8, 192, 2, pick="nothing")
    monkeypatch.setitem(weights.REGISTRY, nomatch.name, nomatch)
    with pytest.raises(weights.WeightsError, match=r"holds \['ino_charades.pth', 'ino_k400.pth'\]; none"):
        weights.fetch("test-none", progress=False)


def test_the_lessons_load_weights_by_name(tiny_name):
    from inolib.course import notebook

    entry, vit, _ = tiny_name
    loaded, report = notebook.load_weights("test-vit")
    assert report["patch_size"] == entry.patch and torch.equal(loaded.pos_embed, vit.pos_embed)
    with pytest.raises(weights.WeightsError, match="known names"):
        notebook.load_weights("no-such-weights")


def test_load_backbone_at_the_package_top_takes_names_and_paths(tiny_name):
    import inolib

    entry, vit, _ = tiny_name
    by_name, report = inolib.load_backbone("test-vit")
    by_path, _ = inolib.load_backbone(weights.cached("test-vit"))
    assert report["depth"] == entry.depth and torch.equal(by_name.pos_embed, by_path.pos_embed)
    cls, patches = by_name.encode(torch.zeros(1, 3, 32, 48))
    assert cls.shape[-1] == entry.width and patches.shape[:2] == (1, 4 * 6)


def test_the_demo_reports_a_named_checkpoint_beside_its_random_init(tiny_name, data_dir, tmp_path):
    from inolib.course.demo import run_demo

    lines = []
    r = run_demo(data_dir, tmp_path / "out", checkpoint="test-vit", train_seconds=0, short_side=64,
                 sequences=["blackswan"], echo=lines.append)
    assert set(r["jf"]) == {"test-vit", "random init", "raw pixels"} and r["report"].is_file()
    assert "test-vit" in r["report"].read_text()
    assert any("block 2," in line for line in lines)  # the paper's block 7 capped to this 2-block ViT
