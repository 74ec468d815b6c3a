"""Checkpoint formats: ours, the released INO layout, DINO's, timm's; each gives the features of the model that wrote it."""

import argparse
import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from inolib import config as C
from inolib.checkpoint import load_backbone, read_config, save_checkpoint
from inolib.model import INOViT, build_network
from inolib.teacher import make_teacher

X = torch.randn(2, 3, 48, 64)


def feats(vit, block=2):
    with torch.no_grad():
        return vit.block_features(X, block)[1]


def small_net(seed=0):
    torch.manual_seed(seed)
    cfg = C.smoke()
    return cfg, build_network(cfg.model)


def test_own_checkpoint_round_trip(tmp_path):
    cfg, student = small_net()
    teacher = make_teacher(student, cfg.model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(0.5)
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pth", cfg, student, teacher, epoch=3, step=17)
    vit, rep = load_backbone(path)
    assert rep["network"] == "student" and rep["format"] == "inolib" and rep["mask_token"]
    torch.testing.assert_close(feats(vit), feats(student.backbone))
    vt, rep = load_backbone(path, key="teacher")
    torch.testing.assert_close(feats(vt), feats(teacher.backbone))
    assert not list(tmp_path.glob("run/*.tmp*"))  # atomic save leaves no temporary file
    # the run's config and step come with the weights (one read), and from read_config alone
    assert rep["config"] == cfg and rep["step"] == 17
    assert read_config(path) == cfg


def test_read_config_refuses_other_formats_and_bad_configs(tmp_path):
    cfg, student = small_net()
    sd = {k[len("backbone."):]: v for k, v in student.state_dict().items() if k.startswith("backbone.")}
    torch.save(sd, tmp_path / "bare.pth")
    vit, rep = load_backbone(tmp_path / "bare.pth", num_heads=cfg.model.num_heads)
    assert rep["config"] is None and rep["step"] is None
    with pytest.raises(ValueError, match=r"bare\.pth: not an inolib checkpoint"):
        read_config(tmp_path / "bare.pth")
    path = save_checkpoint(tmp_path / "ck.pth", cfg, student)
    ck = torch.load(path, weights_only=True)
    ck["config"]["optim"]["no_such_field"] = 1
    torch.save(ck, tmp_path / "badcfg.pth")
    with pytest.raises(ValueError, match=r"badcfg\.pth: its config does not parse.*no_such_field"):
        read_config(tmp_path / "badcfg.pth")
    with pytest.warns(UserWarning, match=r"badcfg\.pth: its config does not parse.*loaded without it"):
        vit, rep = load_backbone(tmp_path / "badcfg.pth")  # the weights still serve label propagation
    assert rep["config"] is None
    torch.testing.assert_close(feats(vit), feats(student.backbone))


def test_released_ino_layout(tmp_path):
    cfg, student = small_net(1)
    # MultiCropWrapper under DDP: module.backbone.* and module.headlist.0.*
    sd = {f"module.{k}" if k.startswith("backbone.") else f"module.headlist.0.{k[5:]}": v
          for k, v in student.state_dict().items()}
    ckpt = {"student": sd, "teacher": {k.replace("module.", ""): v * 0 for k, v in sd.items()},
            "optimizer": {}, "epoch": 5, "args": argparse.Namespace(arch="vit_small"),
            "dino_loss_cls_list": {"0.center": torch.zeros(1, 128)}, "fp16_scaler": {}}
    torch.save(ckpt, tmp_path / "ino.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the args namespace is allowed: a weights-only load, no warning
        vit, rep = load_backbone(tmp_path / "ino.pth", num_heads=3)
    assert rep["network"] == "student" and rep["pos_table"] == (8, 8) and rep["head_keys_ignored"] > 0
    torch.testing.assert_close(feats(vit), feats(student.backbone))


def test_dino_teacher_and_bare_224_table(tmp_path):
    torch.manual_seed(2)
    dino = INOViT(patch_size=16, embed_dim=192, depth=2, num_heads=3, pos_embed_size=224)
    ckpt = {"dino_loss": {"center": torch.zeros(1, 4)}, "epoch": 100,
            "teacher": {f"backbone.{k}": v for k, v in dino.state_dict().items() if k != "mask_token"},
            "student": {f"module.backbone.{k}": v * 2 for k, v in dino.state_dict().items() if k != "mask_token"}}
    ckpt["teacher"]["head.last_layer.weight_g"] = torch.ones(4, 1)
    torch.save(ckpt, tmp_path / "dino.pth")
    vit, rep = load_backbone(tmp_path / "dino.pth")
    assert rep["network"] == "teacher" and rep["pos_table"] == (14, 14) and not rep["mask_token"]
    assert vit.patch_embed.patch_size == (16, 16)
    torch.testing.assert_close(feats(vit), feats(dino))
    torch.save({k: v for k, v in dino.state_dict().items() if k != "mask_token"}, tmp_path / "bare.pth")
    vb, rep = load_backbone(tmp_path / "bare.pth")
    assert rep["format"] == "bare"
    torch.testing.assert_close(feats(vb), feats(dino))


def test_timm_state_dict(tmp_path):
    torch.manual_seed(3)
    t = VisionTransformer(img_size=64, patch_size=8, embed_dim=96, depth=2, num_heads=6, num_classes=0,
                          dynamic_img_size=True)
    torch.save(t.state_dict(), tmp_path / "timm.pth")
    vit, _ = load_backbone(tmp_path / "timm.pth", num_heads=6)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(torch.cat([vit.encode(x)[0][:, None], vit.encode(x)[1]], 1), t.forward_features(x))
    with pytest.raises(ValueError, match="heads"):
        load_backbone(tmp_path / "timm.pth")  # 96 wide: the heads cannot be guessed


def test_bad_checkpoints_name_the_problem(tmp_path):
    cfg, student = small_net()
    sd = dict(student.backbone.state_dict())
    bad = dict(sd, **{"blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape.pth.*blocks.0.attn.qkv.weight"):
        load_backbone(tmp_path / "shape.pth", num_heads=3)
    torch.save(dict(sd, extra_thing=torch.zeros(1)), tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="extra_thing"):
        load_backbone(tmp_path / "extra.pth", num_heads=3)
    missing = {k: v for k, v in sd.items() if k != "norm.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="norm.weight"):
        load_backbone(tmp_path / "missing.pth", num_heads=3)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_backbone(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        load_backbone(tmp_path / "nothere.pth")
    torch.save({"student": sd}, tmp_path / "s.pth")
    with pytest.raises(ValueError, match="teacher"):
        load_backbone(tmp_path / "s.pth", key="teacher", num_heads=3)


class _Payload:
    """A pickle whose loading runs a shell command (creates a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["pickle", "torch-zip"])
def test_a_malicious_checkpoint_never_runs(tmp_path, fmt):
    import os
    import pickle

    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil-{fmt}.pth"
    ckpt = {"student": {"w": torch.zeros(1)}, "args": _Payload(marker)}
    if fmt == "pickle":
        evil.write_bytes(pickle.dumps(ckpt))
    else:
        torch.save(ckpt, evil)
    assert not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "loading anyway" warning either
        with pytest.raises(ValueError) as err:
            load_backbone(evil)
    assert not marker.exists(), "the checkpoint's code ran"
    msg = str(err.value)
    assert evil.name in msg and f"{os.system.__module__}.system" in msg and "--trust-checkpoint" in msg


def test_trust_allows_a_full_load_with_a_warning(tmp_path):
    from inolib.checkpoint import read_checkpoint

    marker = tmp_path / "ran"
    torch.save({"x": _Payload(marker)}, tmp_path / "mine.pth")
    with pytest.warns(UserWarning, match="mine.pth.*trust"):
        read_checkpoint(tmp_path / "mine.pth", trust=True)
    assert marker.exists()  # the user said so


def test_released_args_with_numpy_scalars_load_without_unpickling(tmp_path):
    import numpy as np

    from inolib.checkpoint import read_checkpoint

    cfg, student = small_net(4)
    sd = {f"module.{k}": v for k, v in student.state_dict().items() if k.startswith("backbone.")}
    args = argparse.Namespace(arch="vit_small", lr=np.float64(5e-4), epochs=np.int64(25), warmup=np.float32(0.04),
                              dtype=np.dtype("float32"), flag=np.bool_(True), patch_size=8, out_dim=[65536])
    torch.save({"student": sd, "args": args, "epoch": np.int64(3), "dino_loss_cls_list": {}}, tmp_path / "rel.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obj = read_checkpoint(tmp_path / "rel.pth")
        vit, rep = load_backbone(tmp_path / "rel.pth", num_heads=3)
    assert obj["args"].lr == 5e-4 and obj["args"].dtype == np.dtype("float32") and obj["epoch"] == 3
    assert rep["network"] == "student"
    torch.testing.assert_close(feats(vit), feats(student.backbone))


def test_junk_empty_and_folder_checkpoints_are_clear_errors(tmp_path):
    import os

    (tmp_path / "random.pth").write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"random.pth.*not a (readable )?torch checkpoint"):
        load_backbone(tmp_path / "random.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pth.*empty file"):
        load_backbone(tmp_path / "empty.pth")
    (tmp_path / "adir.pth").mkdir()
    with pytest.raises(ValueError, match=r"adir.pth.*folder"):
        load_backbone(tmp_path / "adir.pth")


def _full_disk(obj, f, *args, **kwargs):
    """torch.save on a disk that fills up part-way: some bytes written, then ENOSPC."""
    import errno

    with open(f, "wb") as out:
        out.write(b"\x00" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device", str(f))


def test_a_failed_save_leaves_no_temporary_file_and_the_previous_checkpoint(tmp_path, monkeypatch):
    from inolib.checkpoint import export_backbones, read_checkpoint

    cfg, student = small_net()
    teacher = make_teacher(student, cfg.model)
    run = tmp_path / "run"
    path = save_checkpoint(run / "checkpoint.pth", cfg, student, teacher, step=3)
    small = export_backbones(path, run / "small.pth")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    monkeypatch.setattr(torch, "save", _full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, cfg, student, teacher, step=4)
    with pytest.raises(OSError, match="No space left"):
        export_backbones(path, small)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no orphan, nothing changed
    assert read_checkpoint(path)["step"] == 3


def test_atomic_write_removes_its_temporary_file_on_any_error(tmp_path):
    from inolib.atomic import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "a.txt", "old")

    def interrupted(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and target.read_text() == "old"


def test_exported_heads_rebuild_the_whole_network(tmp_path):
    from inolib.checkpoint import export_backbones, load_network

    cfg, student = small_net()
    teacher = make_teacher(student, cfg.model)
    K = cfg.model.head_out_dim
    centers = {"center.cls": torch.randn(1, K), "center.patch": torch.randn(1, K)}
    run = save_checkpoint(tmp_path / "run" / "checkpoint.pth", cfg, student, teacher, criterion=centers, step=7)
    ship = export_backbones(run, tmp_path / "ship" / "net.pth", heads=True)
    x = torch.randn(1, 2, 3, 32, 32)
    for key, ref in (("student", student), ("teacher", teacher)):
        net, c = load_network(ship, key=key)
        torch.testing.assert_close(c["patch"], centers["center.patch"])
        with torch.no_grad():
            got, want = net(x)["cls_global"], ref.eval()(x)["cls_global"]
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # fp16 weights
        torch.testing.assert_close(load_backbone(ship, key=key)[0].encode(x[0])[1], net.backbone.encode(x[0])[1])
    with pytest.raises(ValueError, match="key"):
        load_network(ship, key="both")
    bare = export_backbones(run, tmp_path / "ship" / "bare.pth")  # no heads: an error naming the file
    with pytest.raises(ValueError, match="bare.pth.*no student head"):
        load_network(bare)
    no_center = save_checkpoint(tmp_path / "run3" / "checkpoint.pth", cfg, student, teacher)
    with pytest.raises(ValueError, match="centers"):
        export_backbones(no_center, tmp_path / "x.pth", heads=True)


def test_the_shipped_heads_match_the_shipped_backbones():
    from inolib.course import notebook as nb

    net, centers, rnd = nb.load_shipped_network("cpu", network="teacher")
    vit = nb.load_shipped("cpu", network="teacher")[0]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone.encode(x)[1], vit.encode(x)[1])
    assert centers["patch"].shape == (1, net.head.last_layer.out_features)
    assert sum(p.numel() for p in rnd.parameters()) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.pop("config"), "cannot tell the number of heads"),
    (lambda d: d.update(config=[1, 2]), "cannot tell the number of heads"),
    (lambda d: d["config"].update(model={"num_heads": "three"}), "cannot tell the number of heads"),
    (lambda d: d["config"]["model"].update(num_heads=5), "a 48-wide ViT cannot have 5 heads"),
    (lambda d: d.pop("student"), "inolib checkpoint without a 'student' network state dict"),
    (lambda d: d.update(student=[1, 2]), "inolib checkpoint without a 'student' network state dict"),
])
def test_a_damaged_inolib_checkpoint_is_an_error_naming_the_file(tmp_path, damage, message):
    cfg, student = small_net()
    path = save_checkpoint(tmp_path / "ck.pth", cfg, student)
    ck = torch.load(path, weights_only=True)
    damage(ck)
    torch.save(ck, tmp_path / "damaged.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unparsable config also warns
        with pytest.raises(ValueError, match=r"damaged\.pth: " + message):
            load_backbone(tmp_path / "damaged.pth")


@pytest.mark.parametrize("damage,message", [
    (lambda d: d.update(center={"cls": [1.0], "patch": "x"}), r"loss center 'cls' must be a float \(1, 1024\) tensor, got list"),
    (lambda d: d["center"].pop("patch"), r"loss center 'patch' must be a float \(1, 1024\) tensor, got NoneType"),
    (lambda d: d["center"].update(cls=torch.zeros(1, 7)), r"loss center 'cls' must be .* got \(1, 7\)"),
    (lambda d: d.update(student_head={"a": "b"}), r"the student head holds values that are not tensors"),
    (lambda d: d.update(student_head={"a": torch.zeros(1)}), r"the student head does not fit the file's config"),
])
def test_a_damaged_shipped_network_file_is_an_error_naming_it(tmp_path, damage, message):
    from inolib.checkpoint import load_network
    from inolib.course.notebook import data_dir

    obj = torch.load(data_dir() / "checkpoints" / "ino_tiny.pth", weights_only=True)
    obj["center"] = dict(obj["center"])
    damage(obj)
    torch.save(obj, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match=r"damaged\.pth: " + message):
        load_network(tmp_path / "damaged.pth")


def test_sizes_from_a_hostile_file_are_bounded_before_anything_is_built(tmp_path):
    """One extra key 'blocks.99999...' used to build 100,000 blocks; stride-0 tensors claimed huge shapes."""
    import time

    from inolib import config as C
    from inolib.checkpoint import load_backbone
    from inolib.model import build_backbone

    m = C.override(C.smoke(), {"model.embed_dim": "192", "model.num_heads": "3"}).model
    state = build_backbone(m).state_dict()
    t0 = time.perf_counter()
    torch.save({**state, "blocks.99999.norm1.weight": torch.ones(192)}, tmp_path / "gap.pth")
    with pytest.raises(ValueError, match=r"gap.pth: transformer blocks numbered"):
        load_backbone(tmp_path / "gap.pth")
    wide = dict(state, cls_token=torch.zeros(1, 1, 1).expand(1, 1, 10**7))  # stride 0: 4 bytes claim 40 MB
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"wide.pth: tensor 'cls_token' of shape \(1, 1, 10000000\) holds less"):
        load_backbone(tmp_path / "wide.pth")
    assert time.perf_counter() - t0 < 10
