//! Host GPU discovery for `--nv` and CDI (being written).
