//! The content store under `--root`: blobs by digest (OCI image layout), tags, atomic writes, locks.
