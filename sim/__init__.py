"""realloop.sim (see ../shared/ARCHITECTURE.md); built in a later issue."""
