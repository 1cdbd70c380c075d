"""The episode dataset on zarr."""
