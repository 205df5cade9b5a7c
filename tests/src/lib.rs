//! zenws test support (work in progress)
