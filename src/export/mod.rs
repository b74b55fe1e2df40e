//! Exporters: turn a built image into a registry push, an OCI or Docker archive, or a directory.
