"""The released INO code's computations, transcribed loop by loop (frames first, Python loops, boolean indexing,
as in the official repository): the yardstick the tests and benchmarks hold inolib's vectorised code against.
Not used by training or segmentation.

    losses       DINOLoss terms, calc_cross_frame_dino, calc_mim_loss, calc_affine; a step's losses and centers
    propagation  restrict_neighborhood, the label-propagation kernel and its per-frame loop; read_frame's sizes
    step         one released training step (main_VOS.py train_one_epoch), and utils.cosine_scheduler
"""
