//! fuse (being written)
