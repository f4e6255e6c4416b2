//! crumb-proxy (skeleton, being written)
