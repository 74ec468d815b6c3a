"""Config dataclasses: presets, dict round trip, overrides, and a cited source on every default."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from inolib import config as C


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_presets_round_trip_through_plain_dicts(name):
    cfg = C.get_preset(name)
    d = cfg.to_dict()
    json.dumps(d)  # plain types only
    back = C.INOConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert isinstance(back.crops.global_scale, tuple)


def test_paper_defaults():
    cfg = C.charades()
    assert (cfg.model.patch_size, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads) == (8, 384, 12, 6)
    assert cfg.model.pos_embed_size == 64 and cfg.model.head_out_dim == 4096 and cfg.model.head_num_layers == 3
    assert (cfg.crops.clip_len, cfg.crops.num_local, cfg.crops.fps) == (4, 8, 8.0)
    assert cfg.crops.global_scale == (0.8, 0.95) and cfg.crops.local_scale == (0.05, 0.8)
    assert (cfg.loss.student_temp, cfg.loss.teacher_temp) == (0.1, 0.04)
    assert (cfg.masking.prob, cfg.masking.ratio, cfg.masking.mode) == (0.5, (0.1, 0.5), "random")
    assert cfg.optim.momentum_teacher == 0.996
    assert (cfg.propagation.topk, cfg.propagation.num_context, cfg.propagation.radius) == (5, 10, 40)
    assert C.kinetics().optim.base_lr == 0.0003 and C.kinetics().optim.warmup_epochs == 2
    assert C.smoke().model.embed_dim < C.tiny().model.embed_dim < C.charades().model.embed_dim


def test_replace_and_dotted_override():
    cfg = C.tiny()
    a = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, teacher_temp=0.02))
    b = C.override(cfg, {"loss.teacher_temp": "0.02"})
    assert a == b and b.loss.teacher_temp == 0.02 and cfg.loss.teacher_temp == 0.04
    c = C.override(cfg, {"crops.local_scale": "0.05,0.6", "loss.g2g": "false", "optim.epochs": "3"})
    assert c.crops.local_scale == (0.05, 0.6) and c.loss.g2g is False and c.optim.epochs == 3


@pytest.mark.parametrize("key,value,match", [
    ("loss.nope", "1", "unknown config key"),
    ("loss", "1", "unknown config key"),
    ("optim.epochs", "2.5", "expected int"),
    ("loss.g2g", "maybe", "expected a boolean"),
    ("crops.local_scale", "0.1", "expected 2 values"),
])
def test_bad_overrides_name_the_key(key, value, match):
    with pytest.raises(ValueError, match=match):
        C.override(C.tiny(), {key: value})


def test_from_dict_rejects_unknown_keys_and_unknown_preset():
    d = C.tiny().to_dict()
    d["model"]["embed_dims"] = 3
    with pytest.raises(ValueError, match="embed_dims"):
        C.INOConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown preset"):
        C.get_preset("huge")


def test_retired_fields_of_older_checkpoints_are_dropped_and_no_flag_offers_them(data_dir):
    """model.feature_block was never read (propagation.feature_block is the block of the features): configs of
    older checkpoints that hold it still load, and no command offers the flag."""
    from inolib.checkpoint import read_checkpoint
    from inolib.cli import build_parser

    old = C.tiny().to_dict()
    old["model"]["feature_block"] = 4
    assert C.INOConfig.from_dict(old) == C.tiny()
    shipped = read_checkpoint(data_dir / "checkpoints/ino_tiny.pth")["config"]
    assert "feature_block" in shipped["model"]
    assert C.INOConfig.from_dict(shipped).model == C.tiny().model
    assert all(not k.startswith("model.feature_block") for k, _, _ in C.iter_fields())
    for cmd in ("train", "propagate"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--model.feature_block", "3"])


def test_smoke_mode_reads_environment(monkeypatch):
    monkeypatch.setenv("INOLIB_SMOKE", "1")
    assert C.smoke_mode()
    monkeypatch.setenv("INOLIB_SMOKE", "0")
    assert not C.smoke_mode()
    monkeypatch.delenv("INOLIB_SMOKE")
    assert not C.smoke_mode()


def test_every_default_carries_a_source_comment():
    """Each field of the config dataclasses has a trailing comment naming where its value comes from."""
    path = Path(C.__file__)
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    sources = ("Sec.", "App.", "Tab.", "Fig.", "Eq.", "released", "BEiT", "BENCHMARKS.md")  # the last: our measurements
    missing = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "INOConfig":
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    line = lines[stmt.lineno - 1]
                    comment = line.split("#", 1)[1] if "#" in line else ""
                    if not any(s in comment for s in sources):
                        missing.append(f"{node.name}.{stmt.target.id}")
    assert not missing, f"fields without a cited source: {missing}"


def test_iter_fields_covers_every_leaf():
    names = [n for n, _, _ in C.iter_fields()]
    assert "loss.teacher_temp" in names and "model.embed_dim" in names and "crops.global_scale" in names
    assert len(names) == len(set(names))


def test_every_preset_propagates_from_a_block_it_has():
    for name in C.PRESETS:
        cfg = C.get_preset(name)
        assert 1 <= cfg.propagation.feature_block <= cfg.model.depth, name


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_every_preset_validates(name):
    assert C.validate(C.get_preset(name)) == C.get_preset(name)


@pytest.mark.parametrize("overrides,message", [
    ({"loss.teacher_temp": "0"}, "--loss.teacher_temp 0: must be > 0"),
    ({"loss.student_temp": "-0.1"}, "--loss.student_temp -0.1: must be > 0"),
    ({"loss.aff_teacher_temp": "nan"}, "--loss.aff_teacher_temp nan: must be finite"),
    ({"crops.global_scale": "0,0.95"}, "--crops.global_scale 0,0.95: must be MIN,MAX with 0 < MIN <= MAX <= 1"),
    ({"crops.local_scale": "0.5,1.5"}, "--crops.local_scale 0.5,1.5: must be MIN,MAX"),
    ({"crops.global_scale": "0.9,0.5"}, "--crops.global_scale 0.9,0.5: must be MIN,MAX"),
    ({"crops.global_size": "60"}, "--crops.global_size 60: must be a multiple of --model.patch_size 8"),
    ({"crops.local_size": "0"}, "--crops.local_size 0: must be a multiple"),
    ({"crops.num_local": "-1"}, "--crops.num_local -1: must be >= 0"),
    ({"crops.clips_per_video": "0"}, "--crops.clips_per_video 0: must be >= 1"),
    ({"crops.clip_len": "3"}, "--crops.clip_len 3: must be even and >= 2"),
    ({"crops.flip_p": "1.5"}, "--crops.flip_p 1.5: must be in [0, 1]"),
    ({"optim.batch_size_per_gpu": "0"}, "--optim.batch_size_per_gpu 0: must be >= 1"),
    ({"optim.epochs": "0"}, "--optim.epochs 0: must be >= 1"),
    ({"optim.warmup_epochs": "-1"}, "--optim.warmup_epochs -1: must be in 0..1"),
    ({"optim.warmup_epochs": "2"}, "--optim.warmup_epochs 2: must be in 0..1 (--optim.epochs)"),
    ({"optim.base_lr": "-0.001"}, "--optim.base_lr -0.001: must be >= 0"),
    ({"optim.momentum_teacher": "1.1"}, "--optim.momentum_teacher 1.1: must be in [0, 1]"),
    ({"optim.amp": "fp32"}, "--optim.amp fp32: must be one of bf16, fp16, none"),
    ({"masking.prob": "2"}, "--masking.prob 2: must be in [0, 1]"),
    ({"masking.ratio": "0.6,0.2"}, "--masking.ratio 0.6,0.2: must be MIN,MAX"),
    ({"model.num_heads": "5"}, "--model.num_heads 5: must divide --model.embed_dim 48"),
    ({"propagation.feature_block": "0"}, "--propagation.feature_block 0: must be a block of the ViT: 1..2"),
    ({"propagation.topk": "0"}, "--propagation.topk 0: must be >= 1"),
    ({"propagation.radius": "-1"}, "--propagation.radius -1: must be >= 0"),
    ({"propagation.short_side": "7"}, "--propagation.short_side 7: is smaller than one 8-pixel patch"),
    ({"loss.g2g": "false", "loss.l2g": "false", "loss.mim": "false", "loss.aff": "false"}, "every loss is off"),
])
def test_validate_names_the_flag_of_a_value_that_cannot_work(overrides, message):
    cfg = C.override(C.smoke(), overrides)  # smoke: 1 epoch, patch 8, width 48, 2 blocks
    with pytest.raises(ValueError) as e:
        C.validate(cfg)
    assert message in str(e.value)


def test_validate_lists_every_problem_and_checks_types():
    cfg = C.override(C.smoke(), {"loss.teacher_temp": "0", "optim.epochs": "0"})
    with pytest.raises(ValueError, match="invalid configuration: .*teacher_temp 0.*; --optim.epochs 0"):
        C.validate(cfg)
    cfg = dataclasses.replace(C.smoke(), loss=dataclasses.replace(C.smoke().loss, teacher_temp="0.04"))
    with pytest.raises(ValueError, match="--loss.teacher_temp 0.04: must be a number"):
        C.validate(cfg)


def test_propagation_rules_are_the_config_rules():
    """vos.segment checks the propagation settings with config's own rules (one rule set, not two)."""
    from inolib.model import build_backbone
    from inolib.vos.segment import check_propagation_config, segment_sequence

    bad = C.override(C.smoke(), {"propagation.topk": "0", "propagation.radius": "-1", "propagation.short_side": "4",
                                 "propagation.feature_block": "9"})
    m = bad.model
    mine = C.propagation_problems(bad.propagation, m.patch_size, m.depth)
    assert mine == [line for line in C.problems(bad) if line.startswith("--propagation.")] and len(mine) == 4
    assert C.propagation_problems(C.smoke().propagation, 8, 2) == []
    unknown = C.propagation_problems(bad.propagation)  # patch and depth unknown: their rules wait
    assert len(unknown) == 3 and "feature_block" not in " ".join(unknown) and "round_to 8" in unknown[2]
    with pytest.raises(ValueError, match=r"--propagation.topk 0: must be >= 1.*--propagation.radius -1"):
        check_propagation_config(bad.propagation)
    vit = build_backbone(C.smoke().model).eval()
    deep = C.override(C.smoke(), {"propagation.feature_block": "3"}).propagation  # the smoke ViT has 2 blocks
    with pytest.raises(ValueError, match=r"--propagation.feature_block 3: must be a block of the ViT: 1..2"):
        segment_sequence(vit, None, deep)


@pytest.mark.parametrize("key,value,says", [
    ("model.depth", "100000", "must be <= 128"), ("model.embed_dim", str(10**7), "must be <= 8192"),
    ("propagation.short_side", "100000", "must be <= 8192"), ("crops.num_local", str(10**6), "must be <= 256"),
    ("crops.global_size", "80000", "must be <= 4096"), ("synthetic.height", "100000", "must be <= 8192"),
    ("optim.epochs", str(10**12), "must be <= 100000"), ("crops.ratio", "0.5,inf", "must be finite"),
    ("crops.fps", "inf", "must be finite"), ("model.mlp_ratio", "inf", "must be finite"),
    ("loss.teacher_temp", "nan", "must be finite"),
])
def test_sizes_are_bounded_and_numbers_finite(key, value, says):
    with pytest.raises(ValueError, match=f"--{key} .*{says}"):
        C.validate(C.override(C.charades(), {key: value}))
    assert all(C.problems(C.get_preset(n)) == [] for n in C.PRESETS)  # no real run is near a bound
