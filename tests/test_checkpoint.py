"""Checkpoint formats: ours, the released INO layout, DINO's, timm's; each gives the features of the model that wrote it."""

import argparse
import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from inolib import config as C
from inolib.checkpoint import load_backbone, save_checkpoint
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
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pth", cfg, student, teacher, epoch=3)
    vit, rep = load_backbone(path)
    assert rep["network"] == "student" and rep["format"] == "inolib" and rep["mask_token"]
    torch.testing.assert_close(feats(vit), feats(student.backbone))
    vt, rep = load_backbone(path, key="teacher")
    torch.testing.assert_close(feats(vt), feats(teacher.backbone))
    assert not list(tmp_path.glob("run/*.tmp*"))  # atomic save leaves no temporary file


def test_released_ino_layout(tmp_path):
    cfg, student = small_net(1)
    # MultiCropWrapper under DDP: module.backbone.* and module.headlist.0.*
    sd = {f"module.{k}" if k.startswith("backbone.") else f"module.headlist.0.{k[5:]}": v
          for k, v in student.state_dict().items()}
    ckpt = {"student": sd, "teacher": {k.replace("module.", ""): v * 0 for k, v in sd.items()},
            "optimizer": {}, "epoch": 5, "args": argparse.Namespace(arch="vit_small"),
            "dino_loss_cls_list": {"0.center": torch.zeros(1, 128)}, "fp16_scaler": {}}
    torch.save(ckpt, tmp_path / "ino.pth")
    with pytest.warns(UserWarning, match="Python objects"):
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
