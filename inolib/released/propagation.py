"""Label propagation of the released inference (``labelprop/dino.py`` with ``use_efficient``, and
``Inference_Dataset.read_frame``'s sizes and preprocessing), transcribed with plain loops: the yardstick of
``tests/test_propagate.py``, ``tests/test_resize.py`` and ``benchmarks/propagation.py``."""

import numpy as np
import torch
import torch.nn.functional as F

from .. import config as C


def released_window(h, w, r):
    """Brute force: the released restrict_neighborhood (loops over cells)."""
    m = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * r + 1):
                for q in range(2 * r + 1):
                    a, b = i - r + p, j - r + q
                    if 0 <= a < h and 0 <= b < w:
                        m[i, j, a, b] = 1
    return m.reshape(h * w, h * w)


def released_kernel(ctx_feats, query, ctx_labels, neigh, topk=5, chunk=7):
    """labelprop/dino.py (use_efficient): exp(cos/0.1) * window, top-k over all sources, normalise, matmul."""
    NC, D, h, w = ctx_feats.shape
    C = ctx_labels.shape[1]
    src = F.normalize(ctx_feats.reshape(NC, D, h * w), dim=1)
    tar = F.normalize(query.reshape(D, h * w).T, dim=1)[None].repeat(NC, 1, 1)
    segs = ctx_labels.reshape(NC, C, -1).transpose(2, 1).reshape(-1, C).T
    out = []
    for bs in range(0, h * w, chunk):
        t = tar[:, bs:bs + chunk]
        aff = torch.exp(torch.bmm(t, src) / 0.1) * neigh[bs:bs + chunk]
        aff = aff.transpose(2, 1).reshape(-1, t.shape[1])
        kth = torch.topk(aff, dim=0, k=topk).values.min(0).values
        aff[aff < kth] = 0
        aff = aff / aff.sum(0, keepdim=True)
        out.append(segs @ aff)
    return torch.cat(out, -1).reshape(C, h, w)


def released_video(feats, first_labels, topk=5, n_last=10, radius=40, neigh=None, chunk=7):
    """The released per-frame loop; ``neigh`` (hw, hw) is the precomputed window (built by brute force if None)."""
    T, D, h, w = feats.shape
    neigh = released_window(h, w, radius) if neigh is None else neigh
    labels = {0: first_labels}
    for t in range(1, T):
        idx = [0] + [max(tt, 0) for tt in range(t - n_last, t) if max(tt, 0) != 0]
        labels[t] = released_kernel(feats[idx], feats[t], torch.stack([labels[i] for i in idx]), neigh, topk, chunk)
    return torch.stack([labels[t] for t in range(T)])


def released_size(H, W, short_side, multiple):
    """(th, tw) as the released read_frame computes them (Inference_Dataset.py), written out independently."""
    if H > W:
        tw = short_side
        th = int(((tw * H) / W // multiple) * multiple)
    else:
        th = short_side
        tw = int(((th * W) / H // multiple) * multiple)
    return th, tw


def released_input(cv2, path, short_side, multiple, std=C.INFERENCE_STD):
    """The released inference's frame preprocessing: cv2 read (BGR), cv2.resize, /255, RGB, per-channel
    normalisation with std 0.228 for red. Returns float32 (3, th, tw)."""
    img = cv2.imread(str(path))
    th, tw = released_size(*img.shape[:2], short_side, multiple)
    img = cv2.resize(img, (tw, th)).astype(np.float32) / 255.0
    x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))
    for channel, m, s in zip(x, C.IMAGENET_MEAN, std):
        channel.sub_(m)
        channel.div_(s)
    return x
