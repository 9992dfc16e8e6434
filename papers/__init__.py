"""One package per paper. A paper registers itself with `conf/paper/<name>.yaml`; nothing else lists it."""
