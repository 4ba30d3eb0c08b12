"""Datasets, caption files and the bundled synthetic benchmark."""

from vlmdiff.data.captions import Captions, match_captions, read_caption_files, read_coco_captions
from vlmdiff.data.datasets import DATASETS, AnomalyDataset, CifarDataset, build_dataset
from vlmdiff.data.layouts import Record

__all__ = ["DATASETS", "AnomalyDataset", "Captions", "CifarDataset", "Record", "build_dataset", "match_captions",
           "read_caption_files", "read_coco_captions"]
