"""The lessons' paper-scale sections: pretrained backbones when cached, a released-format random ViT-S/8 offline."""

import torch

from inolib import config as C
from inolib.course import paper_scale
from inolib.model import build_backbone


def test_offline_a_released_format_vits8_stands_in_and_the_lesson_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("INOLIB_CACHE", str(tmp_path / "empty"))
    before = torch.get_rng_state()
    nets, said = paper_scale.paper_backbones("smoke", stand_in_depth=2)
    assert torch.equal(torch.get_rng_state(), before)  # the lesson's random state is left alone
    assert list(nets) == [paper_scale.STAND_IN] and "ino weights fetch ino-vits8-charades" in said
    vit = nets[paper_scale.STAND_IN]
    assert (vit.patch_embed.patch_size[0], vit.embed_dim, len(vit.blocks)) == (8, 384, 2)
    again, _ = paper_scale.paper_backbones("smoke", stand_in_depth=2)
    assert torch.equal(again[paper_scale.STAND_IN].pos_embed, vit.pos_embed)  # seeded: the same stand-in


def test_cached_weights_are_shown_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INOLIB_CACHE", str(tmp_path))
    m = C.override(C.smoke(), {"model.embed_dim": "192", "model.num_heads": "3"}).model
    small = build_backbone(m)
    (tmp_path / "weights").mkdir()
    torch.save(small.state_dict(), tmp_path / "weights" / "dino-vits8.pth")  # as if fetched
    nets, said = paper_scale.paper_backbones("laptop")
    assert list(nets) == ["dino-vits8"] and said == "pretrained weights: dino-vits8"
    assert torch.equal(nets["dino-vits8"].pos_embed, small.pos_embed)
