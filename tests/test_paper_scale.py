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
    _, one = paper_scale.paper_backbones("smoke", names=("ino-vits8-charades",))
    assert one.endswith("`ino weights fetch ino-vits8-charades` shows the real ones") and "(and" not in one
    assert "(and dino-vits8, dinov2-vits14)" in said


def test_cached_weights_are_shown_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("INOLIB_CACHE", str(tmp_path))
    m = C.override(C.smoke(), {"model.embed_dim": "192", "model.num_heads": "3"}).model
    small = build_backbone(m)
    (tmp_path / "weights").mkdir()
    torch.save(small.state_dict(), tmp_path / "weights" / "dino-vits8.pth")  # as if fetched
    nets, said = paper_scale.paper_backbones("laptop")
    assert list(nets) == ["dino-vits8"] and said == "pretrained weights: dino-vits8"
    assert torch.equal(nets["dino-vits8"].pos_embed, small.pos_embed)


def test_paper_propagation_takes_block_7_or_the_shallowest_networks_last():
    import pytest

    lesson = C.tiny().propagation
    deep, shallow = paper_scale.random_released_vits8(depth=8), paper_scale.random_released_vits8(depth=3)
    p = paper_scale.paper_propagation(lesson, {"a": deep})
    assert p.feature_block == 7 and (p.short_side, p.radius) == (lesson.short_side, lesson.radius)
    assert paper_scale.paper_propagation(lesson, {"a": deep, "b": shallow}).feature_block == 3
    with pytest.raises(ValueError, match="backbones"):
        paper_scale.paper_propagation(lesson, {})
    with pytest.raises(ValueError, match="mode"):
        paper_scale.paper_backbones("fast")


def test_the_stand_in_has_the_papers_depth_outside_smoke_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("INOLIB_CACHE", str(tmp_path / "empty"))
    assert len(paper_scale.paper_backbones("smoke")[0][paper_scale.STAND_IN].blocks) == 3
    assert len(paper_scale.paper_backbones("laptop")[0][paper_scale.STAND_IN].blocks) == 12


def test_frozen_feature_table_scores_every_network_on_the_same_frames_at_its_own_block(tmp_path, monkeypatch):
    """Paper networks at block 7 (or their last), course networks at the lesson's block; each row's sequences and
    mean; the paper row equals a direct compare_on_sequence at the paper's block."""
    import pytest

    from inolib.data import read_davis_sequence
    from inolib.vos.baselines import PixelFeatures
    from inolib.vos.validation import compare_on_sequence

    davis = "data/davis_sample/DAVIS"
    seqs = [read_davis_sequence(davis, "blackswan"), read_davis_sequence(davis, "car-shadow")]
    lesson = C.override(C.smoke(), {"propagation.short_side": "64", "propagation.radius": "4"}).propagation
    stand_in = paper_scale.random_released_vits8(depth=3)  # paper block 3, the lesson's (smoke) block 2
    assert lesson.feature_block == 2
    tiny = build_backbone(C.smoke().model).eval()
    table = paper_scale.frozen_feature_table({"big": stand_in}, {"tiny": tiny, "raw pixels": PixelFeatures(8)},
                                             seqs, lesson, frames=4, progress=False)
    assert list(table) == ["big", "tiny", "raw pixels", "copy frame 0"]
    for row in table.values():
        assert set(row) == {"blackswan", "car-shadow", "mean"}
        assert row["mean"] == pytest.approx((row["blackswan"] + row["car-shadow"]) / 2)
    direct = compare_on_sequence({"big": stand_in}, seqs[1].head(4),
                                 paper_scale.paper_propagation(lesson, {"big": stand_in}), copy_baseline=False)
    assert table["big"]["car-shadow"] == pytest.approx(direct["big"]["J&F"])
    with pytest.raises(ValueError, match="frames"):
        paper_scale.frozen_feature_table({"big": stand_in}, {}, seqs, lesson, frames=2)
