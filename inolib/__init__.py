"""inolib: In-N-Out generative learning (INO, ACM MM 2022) for dense unsupervised video segmentation.

The method sits at the top of the package (``config``, ``model``, ``masking``, ``center``, ``losses``, ``teacher``,
``augment``, ``schedules``, ``checkpoint``); ``data`` reads videos and datasets, ``vos`` segments videos by label
propagation and scores them, ``run`` trains, ``course`` serves the lessons and the demo, ``released`` transcribes the
released code as the tests' yardstick. docs/modules.md names every module.
"""

__version__ = "0.1.0"
