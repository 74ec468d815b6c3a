"""The four losses of the released ``losses.py``, transcribed loop by loop: ``DINOLoss`` with its ``v == iq``
skip, the per-frame ``calc_mim_loss`` with boolean indexing, ``calc_affine`` with ``einsum('bctn,bctm->btnm')``.
Only ``torch.softmax``/``torch.log_softmax`` are used, never inolib's helpers (the yardstick of
``tests/test_losses.py`` and ``benchmarks/losses.py``)."""

import torch
import torch.nn.functional as F

from ..losses import aff_loss

ST, TT = 0.1, 0.04  # student / teacher temperatures (class and patch), the released defaults
AST, ATT = 0.1, 0.04  # affinity temperatures


def _dino_terms(student_chunks, teacher_chunks, center, student_temp, teacher_temp):
    """DINOLoss.forward (local2glb_only=False): every (teacher iq, student v) term with v != iq.

    Returns a list of (v, scalar) with each term = mean over clips of sum_k -q_k log p_k.
    """
    q_chunks = [torch.softmax((t - center) / teacher_temp, dim=-1).detach() for t in teacher_chunks]
    terms = []
    for iq, q in enumerate(q_chunks):
        for v in range(len(student_chunks)):
            if v == iq:
                continue
            loss = torch.sum(-q * torch.log_softmax(student_chunks[v] / student_temp, dim=-1), dim=-1)
            terms.append((v, loss.mean()))
    return terms


def released_out(s_glob, s_loc, t_glob, center, student_temp=ST, teacher_temp=TT):
    """calc_cross_frame_dino: returns (L_out, list of g2g terms, list of l2g terms).

    s_glob (B, T, K), s_loc (B, T, M, K), t_glob (B, T, K). Pairs (n, T/2 + n).
    """
    B, T, K = s_glob.shape
    M = s_loc.shape[2]
    h = T // 2
    per_pair, g2g, l2g = [], [], []
    for n in range(h):
        t1, t2 = n, h + n
        student_chunks = [s_glob[:, t1], s_glob[:, t2]]
        student_chunks += [s_loc[:, t1, j] for j in range(M)]
        student_chunks += [s_loc[:, t2, j] for j in range(M)]
        teacher_chunks = [t_glob[:, t1], t_glob[:, t2]]
        terms = _dino_terms(student_chunks, teacher_chunks, center, student_temp, teacher_temp)
        assert len(terms) == 2 + 4 * M
        total = 0.0
        for v, term in terms:
            total = total + term
            (g2g if v < 2 else l2g).append(term)
        per_pair.append(total / len(terms))
    return torch.stack(per_pair).mean(), g2g, l2g


def released_mim(student, teacher, mask, center, student_temp=ST, teacher_temp=TT):
    """calc_mim_loss: per frame, boolean-index the masked rows of all clips, one CE term, mean over frames."""
    T = student.shape[1]
    per_frame = []
    for t in range(T):
        m = mask[:, t]
        if m.sum() == 0:
            continue
        s_rows = student[:, t][m]  # (rows, K), pooled over clips
        t_rows = teacher[:, t][m]
        q = torch.softmax((t_rows - center) / teacher_temp, dim=-1).detach()
        logp = torch.log_softmax(s_rows / student_temp, dim=-1)
        per_frame.append(torch.sum(-q * logp, dim=-1).mean())
    if not per_frame:
        return torch.zeros((), dtype=student.dtype)
    return torch.stack(per_frame).mean()


def _released_affine_shared(student, teacher, positions, student_temp=AST, teacher_temp=ATT):
    """calc_affine for clips that share the masked ``positions`` (1-D long)."""
    xs = student[:, :, positions]  # (B, T, Kc, C)
    xt = teacher.detach()[:, :, positions]
    xs = F.normalize(xs.permute(0, 3, 1, 2), dim=1)  # (B, C, T, Kc), L2 over C
    xt = F.normalize(xt.permute(0, 3, 1, 2), dim=1)
    a_s = torch.einsum("bctn,bctm->btnm", xs[:, :, :-1], xs[:, :, 1:])
    a_t = torch.einsum("bctn,bctm->btnm", xt[:, :, :-1], xt[:, :, 1:])
    p_t = torch.softmax(a_t / teacher_temp, dim=-1)
    log_p_s = torch.log_softmax(a_s / student_temp, dim=-1)
    return torch.sum(-p_t * log_p_s, dim=-1).mean()  # mean over (b, t, n)


def released_aff(student, teacher, mask, student_temp=AST, teacher_temp=ATT):
    """Per clip (its mask is the same in every frame), calc_affine; mean over clips with masked tokens."""
    B = student.shape[0]
    per_clip = []
    for b in range(B):
        for t in range(1, mask.shape[1]):
            assert torch.equal(mask[b, t], mask[b, 0])
        positions = torch.nonzero(mask[b, 0]).flatten()
        if positions.numel() == 0:
            continue
        per_clip.append(_released_affine_shared(student[b:b + 1], teacher[b:b + 1], positions,
                                                student_temp, teacher_temp))
    if not per_clip:
        return torch.zeros((), dtype=student.dtype)
    return torch.stack(per_clip).mean()


def released_step(student, teacher, mask, c_cls, c_patch, momentum=0.9):
    """One step of the released code, in its order: for each frame pair, the 34-term DINOLoss with the
    current class center, then ``update_center`` from that pair's 2B teacher rows; for each masked frame,
    the MIM term with the current patch center, then ``update_center`` from that frame's masked teacher
    tokens; the affinity loss (no center). Returns (loss, out, mim, aff, class center, patch center)."""
    s_glob, s_loc, t_glob = student["cls_global"], student["cls_local"], teacher["cls_global"]
    B, T, M, _ = s_loc.shape
    h = T // 2
    per_pair = []
    for n in range(h):
        t1, t2 = n, h + n
        s_chunks = [s_glob[:, t1], s_glob[:, t2]] + [s_loc[:, t1, j] for j in range(M)] + \
                   [s_loc[:, t2, j] for j in range(M)]
        t_chunks = [t_glob[:, t1], t_glob[:, t2]]
        terms = _dino_terms(s_chunks, t_chunks, c_cls, ST, TT)
        per_pair.append(sum(v for _, v in terms) / len(terms))
        batch_center = torch.cat(t_chunks).sum(0, keepdim=True) / (2 * B)
        c_cls = c_cls * momentum + batch_center * (1 - momentum)
    out = torch.stack(per_pair).mean()
    per_frame = []
    for t in range(T):
        m = mask[:, t]
        if m.sum() == 0:
            continue
        t_rows = teacher["patch"][:, t][m]
        q = torch.softmax((t_rows - c_patch) / TT, dim=-1)
        logp = torch.log_softmax(student["patch"][:, t][m] / ST, dim=-1)
        per_frame.append(torch.sum(-q * logp, dim=-1).mean())
        c_patch = c_patch * momentum + t_rows.sum(0, keepdim=True) / t_rows.shape[0] * (1 - momentum)
    mim = torch.stack(per_frame).mean() if per_frame else torch.zeros((), dtype=out.dtype)
    shared = bool((mask == mask[:, :1]).all())  # the released mask is shared by the frames of a clip
    aff = (released_aff if shared else aff_loss)(student["patch"], teacher["patch"], mask)
    return out + mim + aff, out, mim, aff, c_cls, c_patch
