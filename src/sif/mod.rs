//! sif (being written)
