"""inolib: In-N-Out generative learning (INO, ACM MM 2022) for dense unsupervised video segmentation.

Module map (paper section in brackets):
    config     dataclass configs and presets (smoke, tiny, charades, kinetics)
    model      ViT backbone with mask token, projection head, multi-crop network  [3.1, 3.3, A.1]
    masking    random (released) and blockwise (paper) patch masks                [3.3, 4.1]
    center     teacher centering of class and patch logits                        [3.1]
    losses     out g2g, out l2g, in mim, in aff and their sum                     [3.2, 3.3, 3.4]
    teacher    EMA teacher                                                        [3.1, A.1]
    augment    per-frame multi-crop augmentation                                  [3.2, A.1]
    data       videos, clip dataset, synthetic videos, DAVIS and YouTube-VOS readers [4.1, A.1]
    train      one training step, collapse monitors                               [3.1]
    propagate  label propagation (the released kernel, vectorised)                 [A.2]
    checkpoint saving; loading ours, released INO, DINO and timm backbones
    segment    features -> propagation -> palette PNGs for DAVIS / YouTube-VOS / any video
    evaluate   DAVIS J and F, the official semi-supervised protocol                [4.1]
    viz, widgets, nb   figures, explorers and notebook helpers of the course
    cli        the ``ino`` command line
"""

__version__ = "0.1.0"
