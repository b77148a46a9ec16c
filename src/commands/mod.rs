//! commands (being written)
