"""inolib: In-N-Out generative learning (INO, ACM MM 2022) for dense unsupervised video segmentation.

The method sits at the top of the package (``config``, ``model``, ``masking``, ``center``, ``losses``, ``teacher``,
``augment``, ``schedules``, ``checkpoint``); ``data`` reads videos and datasets, ``vos`` segments videos by label
propagation and scores them, ``run`` trains, ``course`` serves the lessons and the demo, ``released`` transcribes the
released code as the tests' yardstick. docs/modules.md names every module.
"""

__version__ = "0.1.0"


def load_backbone(checkpoint, key=None, device="cpu", trust=False):
    """The ViT backbone of a checkpoint file or a weights name (``ino-vits8-charades``, ``dino-vits8``,
    ``dinov2-vits14``, ...; fetched once into the cache) and its report: ``vit, report = inolib.load_backbone(
    "dino-vits8")``; ``vit.encode(images)`` gives the class and patch tokens of (B, 3, H, W) images."""
    from .checkpoint import load_backbone as load
    from .weights import resolve

    return load(resolve(checkpoint), key=key, device=device, trust=trust)

import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys
import types as _types
import warnings as _warnings

# Modules that moved when the package was grouped by audience: the old name still imports, with a
# DeprecationWarning naming the new home, and finds each name where it lives now.
MOVED = {
    "inolib.propagate": ("inolib.vos.propagation",),
    "inolib.resize": ("inolib.vos.resize",),
    "inolib.segment": ("inolib.vos.segment", "inolib.vos.writers", "inolib.data.user_video"),
    "inolib.evaluate": ("inolib.vos.metrics",),
    "inolib.validation": ("inolib.vos.validation",),
    "inolib.baselines": ("inolib.vos.baselines",),
    "inolib.train": ("inolib.run.trainer", "inolib.run.log"),
    "inolib.runlock": ("inolib.run.lock",),
    "inolib.faults": ("inolib.run.faults",),
    "inolib.launch": ("inolib.run.launch",),
    "inolib.viz": ("inolib.course.viz",),
    "inolib.widgets": ("inolib.course.widgets",),
    "inolib.nb": ("inolib.course.notebook",),
    "inolib.book": ("inolib.course.book",),
    "inolib.tokens": ("inolib.course.vit_tokens",),
    "inolib.outview": ("inolib.course.out_view",),
    "inolib.mim": ("inolib.course.mim_probe",),
    "inolib.collapse": ("inolib.course.collapse_runs",),
    "inolib.report": ("inolib.course.demo_report",),
    "inolib.demo": ("inolib.course.demo",),
    "inolib.data.vos": ("inolib.data.vos_datasets",),
}


class _MovedModule(_abc.Loader):
    def create_module(self, spec):
        homes = MOVED[spec.name]
        _warnings.warn(f"{spec.name} moved to {' and '.join(homes)}; import it from there", DeprecationWarning,
                       stacklevel=2)
        module = _types.ModuleType(spec.name, f"Moved to {', '.join(homes)}.")

        def __getattr__(name):
            for home in homes:
                target = _importlib.import_module(home)
                if hasattr(target, name):
                    return getattr(target, name)
            raise AttributeError(f"module {spec.name!r} (moved to {', '.join(homes)}) has no attribute {name!r}")

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module):
        pass


class _MovedFinder(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        return _util.spec_from_loader(name, _MovedModule()) if name in MOVED else None


if not any(isinstance(f, _MovedFinder) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedFinder())
