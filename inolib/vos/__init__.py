"""Video object segmentation by label propagation (App. A.2): the propagation kernel, frame resizing,
the segmentation driver, result writers, J&F and baselines."""
