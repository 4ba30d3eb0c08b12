"""Datasets, caption files and the bundled synthetic benchmark.

The names below load their submodule on first use: ``vlmdiff.data.captions`` and ``vlmdiff.data.synthetic``
import without torch.
"""

from utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "captions": ["Captions", "caption_source", "match_captions", "read_caption_files", "read_coco_captions"],
    "datasets": ["DATASETS", "AnomalyDataset", "CifarDataset", "build_dataset"],
    "layouts": ["Record"],
})
