"""Converters into the realloop dataset."""
