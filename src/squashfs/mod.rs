//! squashfs (being written)
