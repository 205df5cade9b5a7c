//! zenws-mio (work in progress)
#![deny(missing_docs)]
