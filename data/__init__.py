"""The episode dataset on zarr: create, record, read, align (see docs/dataset-format.md)."""

from realloop.data.dataset import Dataset, DatasetLockedError, NotADatasetError
from realloop.data.episode import AlignedEpisode, Episode, Stream
from realloop.data.schema import Feature, SchemaError, make_feature
from realloop.data.writer import DatasetWriteError, EpisodeWriter

__all__ = [
    "AlignedEpisode",
    "Dataset",
    "DatasetLockedError",
    "DatasetWriteError",
    "Episode",
    "EpisodeWriter",
    "Feature",
    "NotADatasetError",
    "SchemaError",
    "Stream",
    "make_feature",
]
