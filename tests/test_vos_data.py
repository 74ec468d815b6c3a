"""DAVIS-2017 and YouTube-VOS readers: the real DAVIS sample, the void label, and errors that name the file."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from inolib.data.video import read_image
from inolib.data.vos_datasets import (VOSSequence, davis_palette, list_davis_sequences, list_ytvos_videos, load_davis, load_ytvos, read_davis_sequence, read_ytvos_sequence)

DAVIS = "davis_sample/DAVIS"
TENNIS = "davis_sample/extras/davis2017_tennis_2frames/DAVIS"


def test_palette_is_the_pascal_voc_map(data_dir):
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal.tolist()}) == 256
    for path in (data_dir / DAVIS / "Annotations/480p/blackswan/00000.png",
                 data_dir / TENNIS / "Annotations/480p/tennis/00000.png"):
        with Image.open(path) as im:
            assert im.mode == "P"
            real = np.asarray(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
        assert np.array_equal(real, pal)


def test_real_davis_sample(data_dir):
    root = data_dir / DAVIS
    assert list_davis_sequences(root) == ["blackswan", "car-shadow", "drift-chicane"]
    seq = read_davis_sequence(root, "blackswan", check_all=True)
    assert isinstance(seq, VOSSequence) and seq.name == "blackswan"
    assert seq.num_frames == 50 and len(seq.mask_paths) == 50
    assert seq.object_ids == [1] and seq.num_objects == 1 and seq.first_frame == {1: 0}
    assert seq.size == (480, 854)
    assert np.array_equal(seq.palette, davis_palette())
    masks = seq.load_masks()
    assert masks.shape == (50, 480, 854) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) == {0, 1}
    assert torch.equal(seq.first_labels(), masks[0])
    frames = seq.load_frames([0, 49])
    assert frames.shape == (2, 3, 480, 854) and frames.dtype == torch.uint8
    assert torch.equal(frames[1], read_image(root / "JPEGImages/480p/blackswan/00049.jpg"))
    seqs = load_davis(root)
    assert [s.name for s in seqs] == ["blackswan", "car-shadow", "drift-chicane"]
    assert [s.num_frames for s in seqs] == [50, 40, 52] and all(s.object_ids == [1] for s in seqs)


def test_tennis_two_objects_and_void(data_dir):
    seq = read_davis_sequence(data_dir / TENNIS, "tennis", check_all=True)
    assert seq.object_ids == [1, 2] and seq.first_frame == {1: 0, 2: 0} and seq.num_frames == 2
    first = seq.first_labels()
    assert set(first.unique().tolist()) == {0, 1, 2, 255}  # void kept as 255, not an object
    assert (first == 255).sum() > 0
    assert seq.load_masks().shape == (2, 480, 854)


@pytest.fixture
def tennis_copy(tmp_path, data_dir):
    """A writable copy of the tennis fixture with an ImageSets list: (root, annotation folder)."""
    root = tmp_path / "DAVIS"
    shutil.copytree(data_dir / TENNIS, root)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("tennis\n")
    assert list_davis_sequences(root) == ["tennis"]
    return root, root / "Annotations" / "480p" / "tennis"


def test_resized_mask_is_an_error(tennis_copy):
    root, ann = tennis_copy
    with Image.open(ann / "00001.png") as im:
        im.resize((427, 240), Image.NEAREST).save(ann / "00001.png")  # stays "P"
    seq = read_davis_sequence(root, "tennis")  # only the first mask is checked by default
    with pytest.raises(ValueError, match="00001.png"):
        seq.load_mask(1)
    with pytest.raises(ValueError, match="00001.png.*size"):
        read_davis_sequence(root, "tennis", check_all=True)
    with Image.open(ann / "00000.png") as im:
        im.resize((427, 240), Image.NEAREST).save(ann / "00000.png")
    with pytest.raises(ValueError, match="00000.png.*size"):
        read_davis_sequence(root, "tennis")


def test_non_indexed_mask_is_an_error(tennis_copy):
    root, ann = tennis_copy
    with Image.open(ann / "00000.png") as im:
        ids = np.array(im)
    Image.fromarray(ids).save(ann / "00000.png")  # "L": same ids, no palette
    with Image.open(ann / "00000.png") as im:
        assert im.mode == "L"
    with pytest.raises(ValueError, match="00000.png.*'P'"):
        read_davis_sequence(root, "tennis")
    seq = read_davis_sequence(root, "tennis", require_indexed=False)
    assert seq.object_ids == [1, 2] and seq.palette is None
    assert torch.equal(seq.first_labels(), torch.from_numpy(ids))


def test_new_object_after_frame_zero_is_an_error(tennis_copy):
    root, ann = tennis_copy
    with Image.open(ann / "00001.png") as im:
        ids = np.array(im)
        palette = im.getpalette()
    ids[10:20, 10:20] = 3
    out = Image.fromarray(ids)
    out.putpalette(palette)
    out.save(ann / "00001.png")
    seq = read_davis_sequence(root, "tennis")  # frame 0 only: fine
    assert seq.object_ids == [1, 2]
    with pytest.raises(ValueError, match=r"00001.png.*\[3\]"):
        read_davis_sequence(root, "tennis", check_all=True)


def test_missing_and_empty_are_errors(tennis_copy):
    root, ann = tennis_copy
    (root / "JPEGImages" / "480p" / "hollow").mkdir()
    with pytest.raises(ValueError, match="hollow"):
        read_davis_sequence(root, "hollow")
    with pytest.raises(FileNotFoundError, match="nosuchseq"):
        read_davis_sequence(root, "nosuchseq")
    (root / "ImageSets" / "2017" / "val.txt").write_text("tennis\nghost\n")
    with pytest.raises(FileNotFoundError, match="ghost"):
        list_davis_sequences(root)
    with pytest.raises(FileNotFoundError, match="test-dev.txt"):
        list_davis_sequences(root, split="test-dev")
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        load_davis(root)
    (ann / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="00000.png"):
        read_davis_sequence(root, "tennis")


def _write_ytvos(root, name, objects, annotations, size=(24, 32), frames=("00000", "00005", "00010", "00015")):
    """A hand-made YouTube-VOS video: grey JPEG frames, palette PNGs {frame: {id: (y0, y1, x0, x1)}}."""
    h, w = size
    img_dir = root / "valid" / "JPEGImages" / name
    ann_dir = root / "valid" / "Annotations" / name
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(np.full((h, w, 3), 40 * i, dtype=np.uint8)).save(img_dir / f"{f}.jpg")
    for f, boxes in annotations.items():
        ids = np.zeros((h, w), dtype=np.uint8)
        for k, (y0, y1, x0, x1) in boxes.items():
            ids[y0:y1, x0:x1] = k
        im = Image.fromarray(ids)
        im.putpalette(davis_palette().flatten().tolist())
        im.save(ann_dir / f"{f}.png")
    meta_file = root / "valid" / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"videos": {}}
    meta["videos"][name] = {"objects": {str(k): {"category": "thing", "frames": []} for k in objects}}
    meta_file.write_text(json.dumps(meta))


def test_ytvos_late_object(tmp_path):
    root = tmp_path / "ytvos"
    _write_ytvos(root, "vidA", [1, 2], {"00000": {1: (2, 10, 2, 10)}, "00010": {2: (12, 20, 15, 30)}})
    assert list_ytvos_videos(root) == ["vidA"]
    seq = read_ytvos_sequence(root, "vidA")
    assert seq.num_frames == 4 and [p.name for p in seq.frame_paths][-1] == "00015.jpg"
    assert seq.object_ids == [1, 2] and seq.first_frame == {1: 0, 2: 2}
    assert sorted(seq.mask_paths) == [0, 2] and seq.size == (24, 32)
    assert np.array_equal(seq.palette, davis_palette())
    assert set(seq.first_labels().unique().tolist()) == {0, 1}
    later = seq.load_mask(2)
    assert later.shape == (24, 32) and int((later == 2).sum()) == 8 * 15
    with pytest.raises(ValueError, match="00005.jpg"):
        seq.load_mask(1)
    with pytest.raises(ValueError, match="no annotation"):
        seq.load_masks()
    assert [s.name for s in load_ytvos(root)] == ["vidA"]
    # an object annotated again later keeps its first frame; a new object may share a frame with an old one
    _write_ytvos(root, "vidD", [1, 2], {"00000": {1: (2, 10, 2, 10)}, "00015": {1: (0, 4, 0, 4), 2: (12, 20, 15, 30)}})
    assert read_ytvos_sequence(root, "vidD").first_frame == {1: 0, 2: 3}


def test_ytvos_errors(tmp_path):
    root = tmp_path / "ytvos"
    with pytest.raises(FileNotFoundError, match="meta.json"):
        list_ytvos_videos(root)
    _write_ytvos(root, "vidB", [1, 2, 3], {"00000": {1: (2, 10, 2, 10)}, "00005": {2: (0, 4, 0, 4)}})
    with pytest.raises(ValueError, match=r"vidB.*\[3\]"):
        read_ytvos_sequence(root, "vidB")
    _write_ytvos(root, "vidC", [1], {"00000": {1: (2, 10, 2, 10)}, "00010": {1: (0, 4, 0, 4)}}, size=(24, 32))
    ann = root / "valid" / "Annotations" / "vidC" / "00010.png"
    with Image.open(ann) as im:
        im.resize((16, 12), Image.NEAREST).save(ann)
    with pytest.raises(ValueError, match="00010.png"):
        read_ytvos_sequence(root, "vidC")
    with pytest.raises(ValueError, match="nosuchvideo"):
        read_ytvos_sequence(root, "nosuchvideo")


def test_a_sequence_name_is_never_a_path(tmp_path):
    """Names from ImageSets, meta.json or --sequences are one path component: '../..' cannot lead the masks onto
    the dataset's annotations (they were overwritten, exit 0)."""
    import json

    from inolib.cli import main
    from inolib.data.synthetic import make_synthetic_video, write_davis_layout
    from inolib.data.vos_datasets import list_ytvos_videos, plain_name

    for bad in ("../x", "..", ".", "", "a/b", "/abs", "a\\b", "a\x00b"):
        with pytest.raises(ValueError, match="plain folder name"):
            plain_name(bad, "test")
    assert plain_name("car-shadow", "test") == "car-shadow"
    davis = tmp_path / "DS"
    write_davis_layout(make_synthetic_video(3, 32, 48, 1, 0, seed=30_003, name="seqX"), davis)
    gt = davis / "Annotations/480p/seqX/00000.png"
    before = gt.read_bytes()
    out = tmp_path / "a/b/c"
    hostile = ["--sequences", "../../../DS/Annotations/480p/seqX"]
    base = ["propagate", "--checkpoint", "random", "--preset", "smoke", "--davis", str(davis), "--out", str(out),
            "--propagation.short_side", "32", "--propagation.feature_block", "1"]
    assert main([*base, *hostile]) == 2
    (davis / "ImageSets/2017/val.txt").write_text("../../../DS/Annotations/480p/seqX\n")
    assert main(base) == 2
    assert gt.read_bytes() == before
    (davis / "ImageSets/2017/val.txt").write_text("seqX\n")
    out.mkdir(parents=True)
    (out / "seqX").symlink_to(davis / "Annotations/480p/seqX")  # a link from the output onto the ground truth
    assert main(base) == 2 and gt.read_bytes() == before
    meta = tmp_path / "yt/valid"
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"videos": {"../escape": {"objects": {}}}}))
    with pytest.raises(ValueError, match="meta.json: video: '../escape'"):
        list_ytvos_videos(tmp_path / "yt")


def test_image_bombs_are_one_error_naming_the_file(tmp_path, monkeypatch):
    """PIL's DecompressionBombError (a huge image in a small file) is a ValueError naming the file in every image
    reader, not a traceback; MAX_IMAGE_PIXELS is lowered so that a small image counts as a bomb here."""
    from PIL import Image

    from inolib.data.synthetic import make_synthetic_video, write_davis_layout
    from inolib.data.user_video import read_first_mask
    from inolib.data.video import read_image
    from inolib.data.vos_datasets import read_davis_sequence
    from inolib.vos.metrics import evaluate_davis

    davis = tmp_path / "D"
    write_davis_layout(make_synthetic_video(3, 48, 64, 1, 0, seed=30_004, name="s"), davis)
    ann = davis / "Annotations/480p/s/00000.png"
    results = tmp_path / "R/s"
    results.mkdir(parents=True)
    for t in range(3):
        (results / f"{t:05d}.png").write_bytes((davis / f"Annotations/480p/s/{t:05d}.png").read_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 48 x 64 = 3072 > 2 x 500: a "bomb"
    for call, name in ((lambda: read_first_mask(ann), "00000.png"),
                       (lambda: read_image(davis / "JPEGImages/480p/s/00000.jpg"), "00000.jpg"),
                       (lambda: read_davis_sequence(davis, "s"), "00000"),
                       (lambda: evaluate_davis(davis, tmp_path / "R", progress=False), r"00000\.(png|jpg)")):
        with pytest.raises(ValueError, match=name):
            call()


def test_a_grey_and_alpha_drawing_is_read_as_the_drawing(tmp_path):
    from PIL import Image

    from inolib.data.user_video import read_first_mask

    arr = np.zeros((20, 30, 2), np.uint8)  # black strokes: L is 0 everywhere, alpha draws the object
    arr[5:12, 8:20, 1] = 255
    Image.fromarray(arr, "LA").save(tmp_path / "la.png")
    ids = read_first_mask(tmp_path / "la.png")
    assert ids.sum() == 7 * 12 and ids[6, 9] == 1 and ids[0, 0] == 0
