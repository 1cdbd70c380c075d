"""Configuration files (YAML) shipped with realloop: robot specs, tasks, collection, dataset examples."""
